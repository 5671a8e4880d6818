"""Beat-aligned frames: librosa's beats grouped into ~2-s frames, and the prompt that lists them."""

import copy

import numpy as np
import pytest

from m2mv.beats import (MAX_FRAME_SECONDS, MIN_FRAME_SECONDS, NoBeatsError, beat_frame_boundaries,
                        bound_frames, group_beats)
from mv_format_m2mv import frame_boundary_problem as boundary_problem

RATE = 22050


def click_track(period: float, seconds: float, rate: int = RATE) -> np.ndarray:
    """A 10-ms decaying 1-kHz click every ``period`` seconds (a metronome), float32 mono."""
    wave = np.zeros(int(seconds * rate), dtype=np.float32)
    t = np.arange(int(0.01 * rate)) / rate
    click = (np.sin(2 * np.pi * 1000 * t) * np.exp(-t / 0.003)).astype(np.float32)
    for start in np.arange(0.0, seconds, period):
        index = int(round(start * rate))
        piece = click[: len(wave) - index]
        wave[index: index + len(piece)] += piece
    return wave


def _assert_on_clicks(times, period, tolerance=0.05):
    for time in times:
        offset = time - period * round(time / period)
        assert abs(offset) <= tolerance, f"{time} s is not on a click every {period} s"


@pytest.mark.parametrize("bpm, beats_per_frame", [(120, 4), (90, 3), (100, 3)])
def test_frames_group_whole_beats_of_a_click_track(bpm, beats_per_frame):
    period = 60.0 / bpm
    boundaries, beat_times = beat_frame_boundaries(click_track(period, 12.0), RATE, 12.0)
    assert boundaries[0][0] == 0.0 and boundaries[-1][1] == 12.0
    assert all(end == next_start for (_, end), (next_start, _) in zip(boundaries, boundaries[1:]))  # contiguous
    cuts = [start for start, _ in boundaries[1:]]
    assert len(cuts) >= 4
    _assert_on_clicks(cuts, period)
    _assert_on_clicks(beat_times, period)
    assert len(beat_times) >= 12.0 / period - 4  # librosa may trim a beat at each end
    spacing = np.diff(cuts)
    assert np.allclose(spacing, beats_per_frame * period, atol=0.05), spacing  # 2.0, 2.0 and 1.8 s


def test_stereo_input_and_default_duration():
    wave = click_track(0.5, 9.0)
    boundaries, _ = beat_frame_boundaries(np.stack([wave, wave]), RATE)
    assert boundaries[-1][1] == 9.0
    assert all(abs((end - start) - 2.0) < 0.06 for start, end in boundaries[1:-1])


@pytest.mark.parametrize("wave", [np.zeros(5 * RATE, np.float32), click_track(10.0, 5.0)], ids=["silence", "1 beat"])
def test_beatless_audio_is_a_clear_error(wave):
    with pytest.raises(ValueError, match=r"no beats detected in quiet\.wav; use --align fixed"):
        beat_frame_boundaries(wave, RATE, name="quiet.wav")


def test_group_beats_of_known_beat_times():
    assert group_beats(np.arange(0.5, 10, 0.5), 10.0) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0), (8.0, 10.0)]
    assert group_beats(np.arange(0.4, 12, 2 / 3), 12.0) == [  # 90 bpm: 3 beats a frame, cuts on the beats
        (0.0, 1.73), (1.73, 3.73), (3.73, 5.73), (5.73, 7.73), (7.73, 9.73), (9.73, 12.0)]
    assert group_beats([-1.0, 3.0, 1.0, 2.0, 15.0], 4.0) == [(0.0, 2.0), (2.0, 4.0)]  # outside beats dropped, sorted
    with pytest.raises(ValueError, match=r"need at least 2 beats inside \(0, 4\) s .*got 1"):
        group_beats([0.0, 2.0, 4.0], 4.0)



def _assert_bounded(frames, duration):
    assert frames[0][0] == 0.0 and frames[-1][1] == round(duration, 2)
    assert all(end == next_start for (_, end), (next_start, _) in zip(frames, frames[1:]))  # contiguous
    lengths = [end - start for start, end in frames]
    assert MIN_FRAME_SECONDS - 1e-9 <= min(lengths) and max(lengths) <= MAX_FRAME_SECONDS + 1e-9, lengths


def test_a_long_stretch_without_beats_gets_two_second_frames_not_one_giant_frame():
    """The ambient track of the whole-songs issue: no beats for its first 87.6 s, then 120 bpm."""
    frames = group_beats(np.arange(87.6, 240.0, 0.5), 240.0)
    _assert_bounded(frames, 240.0)
    assert frames[:3] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)] and (86.0, 87.6) in frames  # 2-s frames, then the beats
    assert [start for start, _ in frames if start >= 87.6][:3] == [87.6, 89.6, 91.6]
    gap = group_beats([0.5, 1.0, 1.5, 2.0, 12.0, 12.5, 13.0, 13.5, 14.0], 16.0)  # a 10-s break mid-song
    _assert_bounded(gap, 16.0)
    assert (2.0, 4.0) in gap and all(end <= 12.0 or start >= 12.0 for start, end in gap)  # the beat at 12 s stays


def test_frames_are_bounded_whatever_the_beats():
    rng = np.random.default_rng(0)
    for _ in range(300):
        duration = float(rng.uniform(3.0, 60.0))
        beats = np.sort(rng.uniform(0.0, duration, size=int(rng.integers(2, 40))))
        if len(beats_inside := beats[(beats > 0) & (beats < duration)]) >= 2:
            _assert_bounded(group_beats(beats_inside, duration), duration)
    assert bound_frames([(0.0, 0.5)]) == [(0.0, 0.5)]  # a clip shorter than a frame is one frame
    assert bound_frames([(0.0, 3.8), (3.8, 4.3), (4.3, 8.2)]) == [(0.0, 2.15), (2.15, 4.3), (4.3, 8.2)]


def test_detection_groups_with_the_same_rule():
    boundaries, beat_times = beat_frame_boundaries(click_track(0.5, 9.0), RATE)
    assert boundaries == group_beats(beat_times, 9.0)
    with pytest.raises(NoBeatsError) as caught:
        beat_frame_boundaries(np.zeros(3 * RATE, np.float32), RATE, name="quiet.wav")
    assert caught.value.reason == "no beats detected in quiet.wav"


def test_prompt_lists_the_given_frames(tiny):
    _, processor = tiny
    prompt = processor.build_prompt(genre_tags=["rock"], frame_boundaries=[(0, 2), (2.0, 4.5), (4.5, 6.0)])
    assert prompt == (
        "### Human: <Audio><|audio|></Audio> Genre tags: rock. Frames: [00:00-00:02], [00:02-00:04.50], "
        "[00:04.50-00:06]. Describe a music video for this music: an overview, then what the video shows in each "
        "of the given frames.\n### Assistant:"
    )
    assert processor.instructions["mv_description_given_frames"] in prompt


def test_prompt_without_frames_is_unchanged(tiny):
    _, processor = tiny
    assert processor.build_prompt() == processor.build_prompt(frame_boundaries=None) == (
        "### Human: <Audio><|audio|></Audio> Describe a music video for this music: an overview, then what the "
        "video shows in each 2-second frame.\n### Assistant:"
    )
    with pytest.raises(ValueError, match="unknown task 'mv_description_given_frames'"):
        processor.build_prompt("mv_description_given_frames")  # an instruction, not a task


@pytest.mark.parametrize(
    "boundaries, message",
    [
        ([], "non-empty list"),
        ("00:00-00:02", "non-empty list"),
        ([(0, 2, 4)], r"frame_boundaries\[0\] must be a \(start, end\) pair"),
        ([(0, 2), (3, 3)], r"frame_boundaries\[1\] = \(3, 3\) s: need 0 <= start < end"),
        ([(-1, 2)], "need 0 <= start < end"),
        ([(0, 2), (1.5, 4)], r"frame_boundaries\[1\] starts at 1.5 s, before the previous frame ends at 2 s"),
        ([(2, 4), (0, 2)], "increasing and non-overlapping"),
        ([(0, float("nan"))], "need 0 <= start < end"),
    ],
)
def test_malformed_frame_boundaries_are_errors(tiny, boundaries, message):
    _, processor = tiny
    with pytest.raises(ValueError, match=message):
        processor.build_prompt(frame_boundaries=boundaries)


def test_frames_need_a_task_instruction_and_a_template_that_renders_them(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="task 'captioning' takes no frame_boundaries"):
        processor.build_prompt("captioning", frame_boundaries=[(0, 2)])
    old = copy.copy(processor)
    old.chat_template = processor.chat_template.replace("frame_boundaries", "gone")
    with pytest.raises(ValueError, match="does not render frame_boundaries"):
        old.build_prompt(frame_boundaries=[(0, 2)])


def test_boundary_problem_compares_to_the_timestamp_precision():
    wanted = [(0.0, 2.02), (2.02, 4.5)]
    assert boundary_problem([(0.0, 2.02), (2.02, 4.5)], wanted) is None
    assert boundary_problem([(0.0, 2.0), (2.0, 4.5)], wanted) == (
        "the 2 generated frames do not match the 2 requested boundaries: frame 1 is [00:00-00:02], "
        "requested [00:00-00:02.02]")
    assert "frame 2 is nothing, requested [00:02.02-00:04.50]" in boundary_problem([(0.0, 2.02)], wanted)
    assert "frame 3 is [00:04.50-00:06], requested no frame" in boundary_problem(wanted + [(4.5, 6.0)], wanted)
