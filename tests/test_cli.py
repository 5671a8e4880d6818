"""`m2mv describe`: files and folders, text and JSON, one clear line per bad file and a failing exit code."""

import json
from pathlib import Path

from m2mv.cli import main

DEMO = Path(__file__).parent / "data" / "openmsx-chemistry-lab-30s.ogg"


def test_describe_json_and_bad_files(tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"\x00" * 100)
    code = main(["describe", str(DEMO), str(bad), str(tmp_path / "missing.wav"), "--model", str(tiny_checkpoint),
                 "--genre", "chiptune", "--mv-type", "animation", "--json", "--greedy", "--max-new-tokens", "8"])
    out, err = capsys.readouterr()
    assert code == 1  # some inputs failed
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 1 and rows[0]["file"] == str(DEMO)
    assert set(rows[0]) >= {"overview", "frames", "problems"}
    assert "broken.mp3: unreadable audio" in err and "missing.wav: no such audio file" in err


def test_describe_folder_as_text(tiny_checkpoint, tmp_path, capsys):
    code = main(["describe", str(DEMO.parent), "--model", str(tiny_checkpoint), "--greedy", "--max-new-tokens", "4"])
    out, _ = capsys.readouterr()
    assert code == 0 and f"== {DEMO}" in out


def test_unknown_mv_type_lists_the_known_ones(tiny_checkpoint, capsys):
    code = main(["describe", str(DEMO), "--model", str(tiny_checkpoint), "--mv-type", "Opera"])
    _, err = capsys.readouterr()
    assert code == 2 and "unknown MV type 'Opera'; known types: Live Performance" in err


def test_describe_reads_every_documented_format(tiny_checkpoint, tmp_path, capsys):
    """WAV, FLAC, OGG/Vorbis, Opus and MP3 (Music4All's format) all go through soundfile, no FFmpeg."""
    import numpy as np
    import soundfile as sf

    wave = np.random.default_rng(0).normal(scale=0.1, size=(3 * 48000, 2)).astype(np.float32)
    files = []
    for suffix, kwargs in ((".wav", {}), (".flac", {}), (".ogg", {"format": "OGG", "subtype": "VORBIS"}),
                           (".opus", {"format": "OGG", "subtype": "OPUS"}), (".mp3", {"format": "MP3"})):
        path = tmp_path / f"song{suffix}"
        sf.write(path, wave, 48000, **kwargs)
        files.append(str(path))
    code = main(["describe", *files, "--model", str(tiny_checkpoint), "--json", "--greedy", "--max-new-tokens", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert sorted(json.loads(line)["file"] for line in out.splitlines()) == sorted(files)


def _write_clicks(path, period=0.5, seconds=12.0, rate=22050):
    import soundfile as sf

    from test_beats import click_track

    sf.write(path, click_track(period, seconds, rate), rate)
    return str(path)


def test_describe_align_beats_json(tiny_checkpoint, tmp_path, capsys):
    song = _write_clicks(tmp_path / "clicks-120bpm.wav")
    silent = tmp_path / "silent.wav"
    import numpy as np
    import soundfile as sf

    sf.write(silent, np.zeros(3 * 16000, np.float32), 16000)
    code = main(["describe", song, str(silent), "--model", str(tiny_checkpoint), "--align", "beats", "--json",
                 "--greedy", "--max-new-tokens", "8"])
    out, err = capsys.readouterr()
    assert code == 1  # the silent file has no beats
    assert f"error: no beats detected in {silent}; use --align fixed" in err
    (row,) = [json.loads(line) for line in out.splitlines()]  # stdout is clean JSON lines (the bar is on stderr)
    assert row["file"] == song and row["align"] == "beats"
    boundaries = row["boundaries"]
    assert boundaries[0][0] == 0.0 and boundaries[-1][1] == 12.0
    assert [round(start) for start, _ in boundaries[1:]] == [2, 4, 6, 8, 10]
    assert all(abs(start - round(start)) <= 0.05 for start, _ in boundaries)
    assert all(abs(t * 2 - round(t * 2)) <= 0.1 for t in row["beat_times"]) and len(row["beat_times"]) >= 18
    # the tiny random model cannot follow the prompt: the mismatch is reported, the text is left as generated
    assert row["frames_match_boundaries"] is False
    assert any("do not match the 6 requested boundaries" in p for p in row["problems"])


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_resumable_out_skips_done_files_and_retries_failed_ones(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import numpy as np
    import soundfile as sf

    from m2mv import cli

    described = []
    real = cli._describe_one
    monkeypatch.setattr(cli, "_describe_one", lambda model, processor, path, *rest: (
        described.append(path.name), real(model, processor, path, *rest))[1])
    songs = tmp_path / "songs"
    songs.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(songs / name, np.random.default_rng(len(name)).normal(scale=0.1, size=32000), 16000)
    bad = songs / "c.mp3"
    bad.write_bytes(b"\x00" * 100)
    out = tmp_path / "results.jsonl"
    run = ["describe", str(songs), "--model", str(tiny_checkpoint), "--greedy", "--max-new-tokens", "4",
           "--genre", "rock", "--out", str(out)]

    assert main(run) == 1
    stdout, err = capsys.readouterr()
    assert stdout == ""  # results go to --out
    assert "describing" in err and "3/3" in err  # the progress bar, on stderr
    assert "error:" in err and "c.mp3: unreadable audio" in err
    rows = _jsonl(out)
    assert [Path(r["file"]).name for r in rows] == ["a.wav", "b.wav", "c.mp3"] and described == ["a.wav", "b.wav",
                                                                                                  "c.mp3"]
    assert all(Path(r["file"]).is_absolute() for r in rows)
    assert {"text", "parsed"} <= set(rows[0]) and "error" in rows[2]
    assert rows[0]["settings"] == {"model": str(tiny_checkpoint.resolve()), "align": "fixed", "genre_tags": ["rock"],
                                   "mv_type": None, "lyrics_understanding": None, "greedy": True,
                                   "max_new_tokens": 4}

    # rerun, killed last time in the middle of a line: the half line is dropped, a and b are skipped, c retried
    with out.open("a", encoding="utf-8") as handle:
        handle.write('{"file": "' + str(songs / "d.wav") + '", "text": "Overv')
    described.clear()
    assert main(run) == 1
    _, err = capsys.readouterr()
    assert described == ["c.mp3"]
    assert "skipping 2 file(s) already described" in err and "half-written last line" in err
    rows = _jsonl(out)  # every line parses again
    assert len(rows) == 4 and "error" in rows[3]

    # the bad file fixed: it is described now; then nothing is left to do
    sf.write(songs / "c.mp3", np.random.default_rng(3).normal(scale=0.1, size=32000), 16000, format="MP3")
    described.clear()
    assert main(run) == 0 and described == ["c.mp3"]
    described.clear()
    assert main(run) == 0 and described == []
    assert "skipping 3 file(s)" in capsys.readouterr().err
    assert len(_jsonl(out)) == 5

    # other settings are other results: nothing is skipped
    assert main(run[:-2] + ["--genre", "pop", "--out", str(out)]) == 0
    assert sorted(described) == ["a.wav", "b.wav", "c.mp3"]
