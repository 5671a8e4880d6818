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


def test_return_audio_hands_back_the_decoded_file_but_never_writes_it(tiny_checkpoint, tmp_path):
    import numpy as np
    import soundfile as sf

    from m2mv.inference import describe_files

    wave = np.random.default_rng(0).normal(scale=0.1, size=48000).astype(np.float32)
    sf.write(tmp_path / "a.wav", wave, 16000)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    out = tmp_path / "results.jsonl"
    good, bad = describe_files([tmp_path / "a.wav", tmp_path / "bad.wav"], tiny_checkpoint, greedy=True,
                               max_new_tokens=4, out=out, progress=False, return_audio=True)
    assert good["audio"]["sampling_rate"] == 16000 and good["audio"]["array"].shape[-1] == 48000
    assert np.allclose(good["audio"]["array"], wave, atol=1e-4) and "audio" not in bad
    assert all("audio" not in row for row in _jsonl(out))
    assert "audio" not in describe_files([tmp_path / "a.wav"], tiny_checkpoint, greedy=True, max_new_tokens=4,
                                         progress=False)[0]


def test_resumable_out_skips_done_files_and_retries_failed_ones(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import numpy as np
    import soundfile as sf

    from m2mv import inference

    described = []
    real = inference.describe_batch
    monkeypatch.setattr(inference, "describe_batch", lambda model, processor, requests, *rest, **kwargs: (
        described.extend(Path(r.name).name for r in requests), real(model, processor, requests, *rest, **kwargs))[1])
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
    assert [Path(r["file"]).name for r in rows] == ["a.wav", "b.wav", "c.mp3"]
    assert described == ["a.wav", "b.wav"]  # c.mp3 failed as it was read, before any generation
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
    assert described == []  # c.mp3 retried: read again, and it fails again before generation
    assert "c.mp3: unreadable audio" in err and "skipping 2 file(s) already described" in err and "half-written last line" in err
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


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the problem, a non-zero exit, no traceback (unless --debug)
# ----------------------------------------------------------------------------------------------------------------


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_truncated_checkpoint_is_one_line_naming_the_weights_file(tiny_checkpoint, tmp_path, capsys):
    import shutil

    folder = tmp_path / "truncated"
    shutil.copytree(tiny_checkpoint, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["describe", str(DEMO), "--model", str(folder)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{weights}: not a readable safetensors file, truncated or corrupt" in line
    assert main(["--debug", "describe", str(DEMO), "--model", str(folder)]) == 2
    assert "Traceback" in capsys.readouterr().err  # --debug shows where it came from


def test_a_text_file_named_mp3_is_reported_as_what_it_is(tiny_checkpoint, tmp_path, capsys):
    fake = tmp_path / "notes.mp3"
    fake.write_text("these are my lyrics, not audio\n")
    assert main(["describe", str(fake), "--model", str(tiny_checkpoint), "--greedy", "--max-new-tokens", "2"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"{fake}: unreadable audio (not a recognised audio format" in line and "does not exist" not in line


def test_convert_refuses_a_pickled_checkpoint_in_one_line(tmp_path, capsys):
    import torch

    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle code ran')",))

    evil = tmp_path / "imagebind_huge.pth"
    torch.save({"x": Payload()}, evil)
    assert main(["convert", "--lm", str(tmp_path), "--imagebind", str(evil), "--out", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(evil) in line and "weights_only=True" in line
    assert not (tmp_path / "out").exists()


def test_conflicting_or_missing_convert_flags_are_refused(tmp_path, capsys):
    from m2mv.cli import convert_main

    assert main(["convert", "--tiny", "--imagebind", "imagebind_huge.pth", "--out", str(tmp_path / "a")]) == 2
    assert "--tiny writes a tiny random checkpoint and takes no --imagebind" in _one_error_line(capsys.readouterr().err)
    assert convert_main(["--out", str(tmp_path / "b")]) == 2  # the m2mv-convert script: the same command
    assert "give --lm (and optionally --imagebind or --audio-encoder), or --tiny" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_missing_model_folder_and_lyrics_file_are_one_line(tmp_path, capsys):
    assert main(["describe", str(DEMO), "--model", str(tmp_path / "nowhere")]) == 2
    assert f"model folder {tmp_path / 'nowhere'} does not exist" in _one_error_line(capsys.readouterr().err)
    assert main(["describe", str(DEMO), "--lyrics", str(tmp_path / "lyrics.txt")]) == 2
    assert f"--lyrics {tmp_path / 'lyrics.txt'}: no such file" in _one_error_line(capsys.readouterr().err)


def test_configs_lists_the_packaged_configs(capsys):
    from m2mv.training.args import configs_dir, resolve_config

    assert main(["configs"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"stage1", "stage2", "demo/stage1", "tiny/stage2", "accelerate/fsdp"} <= set(listed)
    assert resolve_config("tiny/stage1") == configs_dir() / "tiny" / "stage1.yaml"
    assert main(["train", "--config", "stage9"]) == 2
    assert "--config stage9: no such file, and no packaged config of that name" in \
        _one_error_line(capsys.readouterr().err)


def test_train_with_an_accelerate_config_launches_accelerate():
    """The launch line: accelerate's own options (unknown to the stage's dataclasses) go before the module."""
    import sys

    from m2mv.cli.train import accelerate_command
    from m2mv.training.args import configs_dir

    command = accelerate_command(["--accelerate_config", "fsdp", "--config", "stage2", "--num_processes", "8",
                                  "--output_dir", "out"])
    assert command[:5] == [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(configs_dir() / "accelerate" / "fsdp.yaml")]
    launch, stage = command[5:command.index("-m", 5)], command[command.index("-m", 5):]
    assert launch == ["--num_processes", "8"]
    assert stage == ["-m", "m2mv", "train", "--config", str(configs_dir() / "stage2.yaml"), "--output_dir", "out"]
    assert accelerate_command(["--config", "stage2"]) is None


def test_describe_takes_the_lyrics_themselves_and_understands_them(tiny_checkpoint, tmp_path, capsys):
    """--lyrics FILE: the real SmolLM2 writes the lyrics understanding the model is prompted with (the data
    pipeline's step); --lyrics-understanding FILE: a ready one; both at once is refused."""
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("We drove all night along the coast,\nthe radio played the song we loved the most.\n")
    out = tmp_path / "described.jsonl"
    assert main(["describe", str(DEMO), "--model", str(tiny_checkpoint), "--lyrics", str(lyrics), "--greedy",
                 "--max-new-tokens", "2", "--out", str(out)]) == 0
    (row,) = _jsonl(out)
    understanding = row["settings"]["lyrics_understanding"]
    assert isinstance(understanding, str) and len(understanding.split()) >= 5
    assert "We drove all night along the coast" not in understanding  # an understanding, not the lyrics
    ready = tmp_path / "understanding.txt"
    ready.write_text("A song about a night drive.")
    assert main(["describe", str(DEMO), "--model", str(tiny_checkpoint), "--lyrics", str(lyrics),
                 "--lyrics-understanding", str(ready)]) == 2
    assert "give the lyrics (--lyrics) or a ready lyrics understanding" in _one_error_line(capsys.readouterr().err)


def test_batched_describe_equals_one_by_one_under_greedy(tiny, tmp_path, music_like):
    """``--batch-size``: several songs in one generate call (left padding: prompts of different lengths; the audio
    encoded as one batch) give each song the text it gets alone, under greedy decoding."""
    import numpy as np
    import soundfile as sf

    from m2mv.inference import DescribeRequest, describe_batch

    model, processor = tiny
    wave, rate = music_like
    sf.write(tmp_path / "short.wav", wave[: 3 * rate], rate)
    sf.write(tmp_path / "stereo.flac", np.stack([wave, wave[::-1]], axis=1), rate)
    requests = [DescribeRequest(str(DEMO), "openmsx", {"genre_tags": ["chiptune"], "mv_type": "Animation",
                                                       "lyrics_understanding": "A song about a long night drive."}),
                DescribeRequest(str(tmp_path / "short.wav"), "short", {}),
                DescribeRequest(str(tmp_path / "stereo.flac"), "stereo", {"genre_tags": ["rock", "pop"]})]
    prompts = [processor.build_prompt(**r.conditioning) for r in requests]
    assert len({len(processor.tokenizer(p)["input_ids"]) for p in prompts}) == 3  # three lengths: left padding
    greedy = {"do_sample": False, "max_new_tokens": 12}
    alone = [describe_batch(model, processor, [r], greedy)[0].text for r in requests]
    together = [r.text for r in describe_batch(model, processor, requests, greedy)]
    assert together == alone
    assert len(set(alone)) == 3  # three different prompts and songs, three different answers
