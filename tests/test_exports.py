"""``m2mv describe --export srt,vtt,shots.json``: the frames as cues an editor opens, and a shot list; each parses
back with the format's own library to the same times and texts."""

import json
import shutil
from pathlib import Path

import pytest
import srt
import webvtt

from m2mv.cli import main
from m2mv.data.exports import parse_export_formats, write_exports
from m2mv.errors import UsageError
from mv_format_m2mv import MVFrame, format_mv_description, parse_mv_description

DEMO = Path(__file__).parent / "data" / "openmsx-chemistry-lab-30s.ogg"


def test_exports_parse_back_to_the_frames(tmp_path):
    frames = [MVFrame(0.0, 2.0, "A neon city at night."), MVFrame(2.0, 4.5, "The singer walks toward the camera."),
              MVFrame(4.5, 6.25, "Close-up of hands on a guitar.")]
    parsed = parse_mv_description(format_mv_description("A band plays in a neon city.", frames)).to_dict()
    parsed["frames"].append({"start": 9.0, "end": 1.0, "text": "A frame an untrained model wrote backwards."})
    paths, dropped = write_exports(parsed, tmp_path / "song", ["srt", "vtt", "shots.json"], "song.ogg")
    assert [p.name for p in paths] == ["song.srt", "song.vtt", "song.shots.json"] and dropped == 1

    cues = list(srt.parse((tmp_path / "song.srt").read_text()))
    assert [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in cues] == \
        [(f.start, f.end, f.text) for f in frames]
    captions = webvtt.read(tmp_path / "song.vtt").captions
    assert [(c.start, c.end, c.text) for c in captions] == [
        ("00:00:00.000", "00:00:02.000", frames[0].text), ("00:00:02.000", "00:00:04.500", frames[1].text),
        ("00:00:04.500", "00:00:06.250", frames[2].text)]
    shots = json.loads((tmp_path / "song.shots.json").read_text())
    assert shots["source"] == "song.ogg" and shots["overview"] == "A band plays in a neon city."
    assert [(s["shot"], s["start"], s["end"], s["prompt"]) for s in shots["shots"]] == \
        [(i, f.start, f.end, f.text) for i, f in enumerate(frames, start=1)]


def test_unknown_formats_are_refused():
    assert parse_export_formats("srt, vtt,srt") == ["srt", "vtt"]
    with pytest.raises(UsageError, match="unknown export format.*mp4; known: srt, vtt, shots.json"):
        parse_export_formats("srt,mp4")


def test_describe_exports_each_file(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "exports"
    code = main(["describe", str(DEMO), "--model", str(tiny_checkpoint), "--json", "--greedy", "--max-new-tokens",
                 "8", "--export", "srt,vtt,shots.json", "--export-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (row,) = [json.loads(line) for line in captured.out.splitlines()]
    valid = [f for f in row["frames"] if f["end"] > f["start"]]
    stem = DEMO.stem
    assert len(list(srt.parse((out / f"{stem}.srt").read_text()))) == len(valid)
    assert len(webvtt.read(out / f"{stem}.vtt").captions) == len(valid)
    assert len(json.loads((out / f"{stem}.shots.json").read_text())["shots"]) == len(valid)
    assert f"exported {out / stem}.srt" in captured.err

    code = main(["describe", str(DEMO), "--model", str(tiny_checkpoint), "--export", "gif"])
    assert code == 2 and "unknown export format(s) gif" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(DEMO, other / DEMO.name)
    code = main(["describe", str(DEMO), str(other / DEMO.name), "--model", str(tiny_checkpoint), "--export", "srt",
                 "--export-dir", str(out)])
    assert code == 2 and "would both write" in capsys.readouterr().err
