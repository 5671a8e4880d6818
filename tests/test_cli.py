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
