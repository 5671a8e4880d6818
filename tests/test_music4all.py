"""The Music4All-layout builder on a small fake folder in that exact layout; bad input names file and row."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from m2mv.errors import DatasetError
from dataset_scripts.music4all import build_music4all
from m2mv.data.schema import CAPTIONING, MV_DESCRIPTION
from mv_format_m2mv import parse_mv_description

IDS = [f"id{i:03d}" for i in range(8)]


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.write_text("\n".join("\t".join(r) for r in [header] + rows) + "\n", encoding="utf-8")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def music4all(tmp_path):
    """Music4All layout: tab-separated .csv tables, lyrics/{id}.txt, audios/{id}.mp3 (short MP3s here)."""
    root = tmp_path / "music4all"
    (root / "audios").mkdir(parents=True)
    (root / "lyrics").mkdir()
    rng = np.random.default_rng(0)
    for i, song_id in enumerate(IDS):
        sf.write(root / "audios" / f"{song_id}.mp3", rng.normal(scale=0.1, size=8000 * 3), 8000, format="MP3")
        (root / "lyrics" / f"{song_id}.txt").write_text("la la la\n")
    _write_tsv(root / "id_information.csv", ["id", "artist", "song", "album_name"],
               [[s, f"Artist {i % 3}", f"Song {i}", "Album"] for i, s in enumerate(IDS)])
    _write_tsv(root / "id_genres.csv", ["id", "genres"], [[s, "rock,indie rock"] for s in IDS])
    _write_tsv(root / "id_tags.csv", ["id", "tags"], [[s, "guitar,energetic"] for s in IDS])
    _write_tsv(root / "id_lang.csv", ["id", "lang"], [[s, "en"] for s in IDS])
    frames = [{"id": s, "overview": f"A band plays song {i} on a rooftop.",
               "frames": [{"start": "00:00", "end": "00:03", "caption": "Wide shot of the city."},
                          {"start": 3.0, "end": 30.0, "caption": "The singer at the microphone."}]}
              for i, s in enumerate(IDS)]
    user = {
        "frame_captions": _jsonl(tmp_path / "frames.jsonl", frames),
        "mv_types": _jsonl(tmp_path / "types.jsonl", [{"id": s, "mv_type": "live performance"} for s in IDS]),
        "lyrics_understanding": _jsonl(tmp_path / "lu.jsonl", [{"id": s, "text": "About a city."} for s in IDS]),
    }
    return root, user, tmp_path


def test_builds_both_configs(music4all):
    from datasets import load_dataset

    root, user, tmp = music4all
    report = build_music4all(root, tmp / "out", progress=False, **user)
    assert sum(report.counts[MV_DESCRIPTION].values()) == 8 and not report.skipped
    rows = load_dataset(str(tmp / "out"), MV_DESCRIPTION)
    row = next(iter(rows.values()))[0]
    assert row["mv_type"] == "Live Performance" and row["genre_tags"] == ["rock", "indie rock"]
    parsed = parse_mv_description(row["description"], expected_duration=30.0)
    assert parsed.is_valid and len(parsed.frames) == 15
    assert parsed.frames[1].text == "Wide shot of the city. The singer at the microphone."  # 2-4 s overlaps both
    captions = next(iter(load_dataset(str(tmp / "out"), CAPTIONING).values()))[0]
    assert captions["caption_source"] == "rendered_from_tags" and "rock" in captions["caption"]


def test_artist_disjoint_split(music4all):
    from datasets import load_dataset

    root, user, tmp = music4all
    build_music4all(root, tmp / "out", split_by="artist", progress=False, **user)
    ds = load_dataset(str(tmp / "out"), MV_DESCRIPTION)
    artists = [set(ds[s]["artist"]) for s in ds]
    assert all(not (a & b) for i, a in enumerate(artists) for b in artists[i + 1:])


def _break(music4all, what):
    root, user, tmp = music4all
    if what == "missing audio":
        (root / "audios" / "id003.mp3").unlink()
        return "id003.mp3: missing audio file"
    if what == "truncated audio":
        path = root / "audios" / "id003.mp3"
        path.write_bytes(path.read_bytes()[:1500])
        return "id003.mp3: (truncated audio|unreadable audio)"
    if what == "id not in a table":
        lines = (root / "id_genres.csv").read_text().splitlines()
        (root / "id_genres.csv").write_text("\n".join(lines[:-1]) + "\n")
        return "id_genres.csv: song id 'id007' of id_information.csv is missing"
    if what == "unknown MV type":
        _jsonl(user["mv_types"], [{"id": s, "mv_type": "Opera" if s == "id002" else "Animation"} for s in IDS])
        return r"types.jsonl, row 3: unknown MV type 'Opera'; known types: Live Performance"
    if what == "empty description":
        _jsonl(tmp / "desc.jsonl", [{"id": s, "description": "" if s == "id001" else
                                     "Overview: o\nFrames:\n[00:00-00:02] x"} for s in IDS])
        user.pop("frame_captions")
        user["descriptions"] = tmp / "desc.jsonl"
        return "desc.jsonl, row 2: empty description"
    if what == "duplicate ids":
        with open(root / "id_tags.csv", "a") as handle:
            handle.write("id004\tdup\n")
        return r"id_tags.csv, row 10: duplicate id 'id004'"
    if what == "malformed timestamp":
        rows = [json.loads(line) for line in user["frame_captions"].read_text().splitlines()]
        rows[5]["frames"][0]["end"] = "0:0x"
        _jsonl(user["frame_captions"], rows)
        return r"frames.jsonl, row 6, frame 0: malformed timestamp '0:0x'"
    raise AssertionError(what)


BAD = ["missing audio", "truncated audio", "id not in a table", "unknown MV type", "empty description",
       "duplicate ids", "malformed timestamp"]


@pytest.mark.parametrize("what", BAD)
def test_bad_input_is_a_clear_error(music4all, what):
    message = _break(music4all, what)
    root, user, tmp = music4all
    with pytest.raises(DatasetError, match=message):
        build_music4all(root, tmp / "out", progress=False, **user)
    assert not (tmp / "out" / "README.md").exists()


@pytest.mark.parametrize("what", BAD)
def test_skip_bad_reports_and_goes_on(music4all, what):
    message = _break(music4all, what)
    root, user, tmp = music4all
    report = build_music4all(root, tmp / "out", skip_bad=True, progress=False, **user)
    assert any(__import__("re").search(message, line) for line in report.skipped), report.skipped
    assert 6 <= sum(report.counts[MV_DESCRIPTION].values()) <= 7
    assert (tmp / "out" / "README.md").is_file()
