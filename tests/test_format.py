"""The MV description format: formatter and parser are each other's inverse; malformed text is reported."""

import pytest

from mv_format_m2mv import (
    MVFrame,
    format_mv_description,
    format_timestamp,
    frame_boundaries,
    parse_mv_description,
    parse_timestamp,
)


def _frames(n=15, step=2.0):
    return [MVFrame(i * step, (i + 1) * step, f"Shot {i}: the singer turns toward the light.") for i in range(n)]


def test_format_writes_overview_then_fixed_step_frames():
    text = format_mv_description("A neon city at night.", _frames(3))
    assert text.splitlines() == [
        "Overview: A neon city at night.",
        "Frames:",
        "[00:00-00:02] Shot 0: the singer turns toward the light.",
        "[00:02-00:04] Shot 1: the singer turns toward the light.",
        "[00:04-00:06] Shot 2: the singer turns toward the light.",
    ]


def test_round_trip_15_frames_of_30_s():
    frames = _frames(15)
    parsed = parse_mv_description(format_mv_description("Overview text.", frames), expected_duration=30.0)
    assert parsed.is_valid, parsed.problems
    assert parsed.overview == "Overview text."
    assert parsed.frames == frames


def test_round_trip_beat_aligned_fractional_timestamps():
    frames = [MVFrame(0.0, 1.52, "a"), MVFrame(1.52, 3.04, "b"), MVFrame(3.04, 65.5, "c")]
    parsed = parse_mv_description(format_mv_description("o", frames))
    assert [(f.start, f.end) for f in parsed.frames] == [(0.0, 1.52), (1.52, 3.04), (3.04, 65.5)]
    assert format_timestamp(65.5) == "01:05.50" and parse_timestamp("01:05.50") == 65.5


def test_truncated_last_frame_is_tolerated_and_reported():
    text = format_mv_description("o", _frames(4)) + "\n[00:08-00:1"
    parsed = parse_mv_description(text, expected_duration=10.0)
    assert len(parsed.frames) == 4 and parsed.overview == "o"
    assert any("truncated frame line" in p for p in parsed.problems)
    assert any("before the clip's end" in p for p in parsed.problems)


def test_generated_text_stops_at_the_template_stop():
    text = format_mv_description("o", _frames(1)) + "\n###\n### Human: more"
    assert parse_mv_description(text).is_valid


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "no overview"),
        ("Overview: only an overview", "no frames"),
        ("Frames:\n[00:00-00:02] a", "no overview"),
        ("Overview: o\n[00:02-00:00] backwards", "not after its start"),
        ("Overview: o\n[00:00-00:04] a\n[00:02-00:06] b", "overlaps"),
        ("Overview: o\n[00:00-00:02]", "has no text"),
        ("Overview: o\n[00:00-00:02] a\n[0x:00-00:04] b\n[00:04-00:06] c", "malformed frame line"),
        ("Overview: o\n[00:00-00:02] a\nstray words", "not a frame"),
        ("just some words", "does not start with 'Overview:'"),
    ],
)
def test_malformed_text_is_reported(text, problem):
    parsed = parse_mv_description(text)
    assert not parsed.is_valid
    assert any(problem in p for p in parsed.problems), parsed.problems


def test_a_first_frame_on_the_header_line_is_kept_and_reported():
    parsed = parse_mv_description("Overview: A band plays.\nFrames: [00:00-00:02] a\n[00:02-00:04] b")
    assert parsed.overview == "A band plays."
    assert [(f.start, f.end, f.text) for f in parsed.frames] == [(0, 2, "a"), (2, 4, "b")]
    assert parsed.problems == ["line 2: the first frame is on the 'Frames:' line"]


@pytest.mark.parametrize("bad", [("", _frames(1)), ("o", [MVFrame(0, 2, "  ")]), ("o", [MVFrame(2, 2, "x")])])
def test_formatter_refuses_empty_or_inverted_parts(bad):
    with pytest.raises(ValueError):
        format_mv_description(*bad)


def test_frame_boundaries_cover_the_clip():
    assert frame_boundaries(30.0) == [(2.0 * i, 2.0 * i + 2.0) for i in range(15)]
    assert frame_boundaries(5.0)[-1] == (4.0, 5.0)


def test_parse_timestamp_rejects_garbage():
    with pytest.raises(ValueError, match="malformed timestamp"):
        parse_timestamp("1:2:3")
