"""The music-facts metric (m2mv/evaluation/music_facts.py) on descriptions the demo dataset's own rules write."""

import pytest

from m2mv.data.demo_words import LIGHT_BY_BRIGHTNESS, SHOT_BY_LEVEL
from m2mv.evaluation.music_facts import constant_answer_ceiling, overview_facts, score_music_facts
from mv_format_m2mv import MVFrame, format_mv_description

QUIET, MEDIUM, LOUD = (SHOT_BY_LEVEL[k].capitalize() for k in ("quiet", "medium", "loud"))


def description(overview: str, shots: list[str], step: float = 2.0) -> str:
    return format_mv_description(overview, [MVFrame(i * step, (i + 1) * step, f"{s}; deep shadows.")
                                            for i, s in enumerate(shots)])


REFERENCE = description("A dance/choreography video for a very fast techno track in F# minor: a studio floor, in "
                        "sharp white highlights, the energy building up.", [QUIET, MEDIUM, LOUD, LOUD])


def test_overview_facts_reads_each_fact_once():
    facts = overview_facts("A live performance video for a mid-tempo jazz/blues track in Eb major: a club, in "
                           "warm amber light, the energy restless.")
    assert facts == {"tempo": "mid-tempo", "genre": "jazz/blues", "key": "Eb major", "light": "warm amber light",
                     "dynamics": "restless"}
    assert overview_facts("A video for a very fast techno track")["tempo"] == "very fast"  # not "fast"
    assert overview_facts("A guide for a guide in 2 seconds.") == {}
    assert overview_facts("A dance video for a techno track in a fast tempo") == {"genre": "techno", "tempo": "fast"}


def test_the_reference_scores_full_marks_and_nothing_scores_zero():
    assert score_music_facts([REFERENCE], [REFERENCE]) == {
        "music_facts": 1.0, "frame_shots": 1.0,
        "music_facts_by_kind": {k: 1.0 for k in ("tempo", "genre", "key", "light", "dynamics")}}
    empty = score_music_facts(["", "Overview: A guide for a guide in 2 seconds."], [REFERENCE, REFERENCE])
    assert empty["music_facts"] == 0.0 and empty["frame_shots"] == 0.0


def test_partial_answers_score_what_they_get_right():
    wrong_key_slow = description("A dance/choreography video for a slow techno track in F# major: a studio floor, "
                                 f"in {LIGHT_BY_BRIGHTNESS['glassy']}, the energy building up.",
                                 [QUIET, LOUD, LOUD])  # 3 frames of 4; frame 2 wrong, frame 4 missing
    scores = score_music_facts([wrong_key_slow], [REFERENCE])
    assert scores["music_facts"] == pytest.approx(3 / 5)  # genre, light, dynamics right; tempo, key wrong
    assert scores["music_facts_by_kind"] == {"tempo": 0.0, "genre": 1.0, "key": 0.0, "light": 1.0, "dynamics": 1.0}
    assert scores["frame_shots"] == pytest.approx(2 / 4)
    # frames matched by time, not by index: 1-s frames over the same stretch
    halves = description("Some video.", [QUIET, QUIET, MEDIUM, MEDIUM, LOUD, LOUD, LOUD, LOUD], step=1.0)
    assert score_music_facts([halves], [REFERENCE])["frame_shots"] == 1.0


def test_no_constant_answer_scores_above_the_ceiling_and_the_best_one_reaches_it():
    jazz = description("A live performance video for a slow jazz track in F# minor: a club, in "
                       f"{LIGHT_BY_BRIGHTNESS['dark']}, the energy building up.", [LOUD, QUIET, QUIET, QUIET])
    references = [REFERENCE, REFERENCE, jazz]  # tempo 2/3, genre 2/3, key 3/3, light 2/3, dynamics 3/3
    ceiling = constant_answer_ceiling(references)
    assert ceiling["music_facts"] == pytest.approx(12 / 15)
    assert ceiling["frame_shots"] == pytest.approx((2 + 2 + 2 + 2) / 12)  # each frame time: 2 of 3 agree
    best = REFERENCE  # the most common value of every fact and the most common shot at every frame time
    assert score_music_facts([best] * 3, references)["music_facts"] == pytest.approx(ceiling["music_facts"])
    assert score_music_facts([best] * 3, references)["frame_shots"] == pytest.approx(ceiling["frame_shots"])
    for constant in (jazz, description("Some video.", [QUIET] * 4)):
        scores = score_music_facts([constant] * 3, references)
        assert scores["music_facts"] <= ceiling["music_facts"] and scores["frame_shots"] <= ceiling["frame_shots"]
    assert constant_answer_ceiling([description("A band plays.", ["The drummer counts in."])]) == {
        "music_facts": None, "frame_shots": None}


def test_references_without_facts_give_none():
    other = description("A band plays on a dark stage under red lights.", ["The drummer counts in."])
    assert score_music_facts([other], [other]) == {"music_facts": None, "music_facts_by_kind": {},
                                                   "frame_shots": None}


def test_demo_descriptions_state_every_fact():
    """The demo dataset's renderer writes what the metric reads: every fact of its overview and every frame's shot."""
    import numpy as np

    from dataset_scripts.demo_dataset import render_description

    record = {"clip_id": "c", "duration_s": 8.0, "genre_tags": ["techno"],
              "analysis": {"tempo_bpm": 128.0, "key": "A minor", "centroid_mean_hz": 2500.0,
                           "centroid_hz": [2500.0] * 4, "loudness_dbfs": [-30.0, -20.0, -10.0, -5.0],
                           "beat_times_s": [], "window_s": 2.0}}
    text = render_description(record, "Dance/Choreography")
    assert overview_facts(text.splitlines()[0]) == {"tempo": "fast", "genre": "techno", "key": "A minor",
                                                    "light": "bright daylight colours", "dynamics": "building up"}
    scores = score_music_facts([text], [text])
    assert scores["music_facts"] == 1.0 and scores["frame_shots"] == 1.0
    assert text.count("Quick cuts") == 1  # the loudest window only: above the clip's 67th percentile
    assert np.isclose(score_music_facts([text.replace("Quick cuts and a moving camera", "The camera glides slowly")],
                                        [text])["frame_shots"], 0.75)
