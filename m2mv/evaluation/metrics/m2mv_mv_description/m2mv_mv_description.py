# Copyright the m2mv authors. Apache-2.0.
"""m2mv's music-video (MV) description metric, an ``evaluate`` module loaded from a local path.

    import evaluate
    metric = evaluate.load("metrics/m2mv_mv_description")          # the folder, or the .py file inside it
    metric.compute(predictions=[...], references=[...], bertscore_model="path/to/encoder")

Text metrics (the paper's four numbers, 0-100), each from the field's library, never hand-counted n-grams:
- BLEU-1 and BLEU-4: sacrebleu corpus BLEU, ``13a`` tokenisation, lowercased, ``exp`` smoothing;
- ROUGE-L F1: rouge-score's LCS F-measure, the mean over examples (max over a prediction's references), with
  rouge-score's own tokenisation extended to non-ASCII letters;
- BERTScore F1: the ``bert-score`` package with the encoder folder given as ``bertscore_model`` (no hub).
Structure metrics (from the package's one parser, ``mv_format_m2mv.parse_mv_description``): share of outputs that
parse without problems, share with an overview, mean |frame count - expected|, timestamp coverage of the clip, and,
with ``beat_times``, the share of frame boundaries within ``beat_tolerance`` seconds of a beat.
The card (README.md beside this file) says what each choice is and why.
"""

import math
import re
from pathlib import Path

import datasets
import evaluate
from rouge_score import rouge_scorer, tokenizers
from sacrebleu.metrics import BLEU

try:  # the package's one MV-format parser: from the m2mv package, or the mv_format_m2mv.py of any m2mv checkpoint
    from mv_format_m2mv import STOP_STRING, parse_mv_description
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the m2mv_mv_description metric needs mv_format_m2mv (the MV-format parser): install the m2mv package "
        "(pip install m2mv) or put the mv_format_m2mv.py of an m2mv checkpoint on sys.path"
    ) from err


_CITATION = """\
@article{mao2025m2mv,
  title   = {Cross-Modal Learning for Music-to-Music-Video Description Generation},
  author  = {Mao, Zhuoyuan and others},
  journal = {arXiv preprint arXiv:2503.11190},
  year    = {2025}
}
@inproceedings{post-2018-call,
  title = {A Call for Clarity in Reporting {BLEU} Scores}, author = {Post, Matt}, booktitle = {WMT}, year = {2018}
}
@inproceedings{lin-2004-rouge,
  title = {{ROUGE}: A Package for Automatic Evaluation of Summaries}, author = {Lin, Chin-Yew}, year = {2004}
}
@inproceedings{zhang2020bertscore,
  title = {{BERTScore}: Evaluating Text Generation with {BERT}}, author = {Zhang, Tianyi and others},
  booktitle = {ICLR}, year = {2020}
}
"""

_DESCRIPTION = """\
Scores generated music-video descriptions (an overview plus a frame-by-frame breakdown) against reference
descriptions: BLEU-1, BLEU-4, ROUGE-L F1 and BERTScore F1 (the numbers of arXiv 2503.11190), plus structure metrics
from m2mv's MV-format parser (parse rate, overview rate, frame-count error, timestamp coverage, beat alignment).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): generated MV descriptions.
    references (`list[str]` or `list[list[str]]`): one reference per prediction, or several (then BLEU uses all of
        them as sacrebleu reference streams, ROUGE-L and BERTScore take the best reference per prediction, and the
        structure metrics read the first). Empty references are dropped; a prediction left with none is an error.
    bertscore_model (`str`, optional): folder of a local encoder (a transformers BERT/RoBERTa-style model with its
        tokenizer). Without it BERTScore is not computed (``bertscore_f1`` is None).
    bertscore_num_layers (`int`, optional): encoder layer whose embeddings are compared (default: the last one).
    bertscore_batch_size (`int`, default 16), bertscore_device (`str`, optional): passed to ``bert_score.BERTScorer``.
    text_mode (`str`, default ``"content"``): ``"content"`` scores the words of the description without the format's
        scaffolding (the ``Overview:``/``Frames:`` headers and ``[MM:SS-MM:SS]`` stamps, removed line by line by the
        parser); ``"raw"`` scores the texts as given.
    bleu_tokenize (`str`, default ``"13a"``), bleu_lowercase (`bool`, default True), bleu_smooth_method (`str`,
        default ``"exp"``): sacrebleu's BLEU settings.
    rouge_use_stemmer (`bool`, default False): Porter stemming in ROUGE-L.
    durations (`float` or `list[float]`, optional): clip length(s) in seconds for the structure metrics; default:
        where each (first) reference's last frame ends.
    expected_frames (`int` or `list[int]`, optional): expected frame count(s); default: the (first) reference's count.
    beat_times (`list[list[float]]`, optional): beat times (seconds) per example; enables ``beat_alignment``.
    beat_tolerance (`float`, default 0.07): seconds within which a frame boundary counts as on a beat.
Returns:
    bleu_1, bleu_4, rougeL_f1, bertscore_f1 (0-100); parse_rate, overview_rate, timestamp_coverage,
    beat_alignment (shares, 0-1); frame_count_error (mean absolute frames); num_examples; the settings that
    produced them (bleu_signature, bleu_1_signature, rouge_tokenizer, text_mode, bertscore_model,
    bertscore_num_layers, bertscore_hash).
Examples:
    >>> metric = evaluate.load("metrics/m2mv_mv_description")
    >>> ref = "Overview: A band plays.\\nFrames:\\n[00:00-00:02] The drummer counts in."
    >>> result = metric.compute(predictions=[ref], references=[ref])
    >>> result["bleu_4"], result["parse_rate"]
    (100.00000000000004, 1.0)
"""

BLEU_TOKENIZE = "13a"
BLEU_LOWERCASE = True
BLEU_SMOOTH = "exp"
TEXT_MODES = ("content", "raw")
DEFAULT_BEAT_TOLERANCE = 0.07  # seconds; the window of the usual beat-tracking F-measure (mir_eval)

_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits in any script
_SCORERS: dict = {}  # (encoder folder, layers, batch size, device) -> bert_score.BERTScorer, loaded once per process


class UnicodeRougeTokenizer(tokenizers.Tokenizer):
    """rouge-score's default tokenisation (lowercase, split on anything but letters and digits, optional Porter
    stemming of words over 3 characters), except that letters and digits of every script are kept: the default
    one keeps only ``[a-z0-9]`` and turns "café" into "caf" and a Japanese sentence into nothing."""

    def __init__(self, use_stemmer: bool = False):
        self._stemmer = None
        if use_stemmer:
            from nltk.stem import porter

            self._stemmer = porter.PorterStemmer()

    def tokenize(self, text):
        words = _WORD.findall(text.lower())
        if self._stemmer is not None:
            words = [self._stemmer.stem(w) if len(w) > 3 else w for w in words]
        return words


def scoring_text(text: str, mode: str = "content") -> str:
    """The text that the text metrics score: the description's words, or the raw text (``mode="raw"``).

    ``content``: each line is parsed on its own by the package's parser, so its ``Overview:`` header, a ``Frames:``
    line and a leading ``[MM:SS-MM:SS]`` stamp are removed while every other word is kept (stray lines too).
    """
    if mode == "raw":
        return text.strip()
    if mode != "content":
        raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {mode!r}")
    words = []
    for line in text.split("\n" + STOP_STRING)[0].splitlines():
        if not line.strip():
            continue
        parsed = parse_mv_description(line)
        words.extend(part for part in [parsed.overview] + [frame.text for frame in parsed.frames] if part)
    return " ".join(" ".join(words).split())


def _per_example(value, count: int, name: str) -> list:
    if value is None or isinstance(value, (int, float)):
        return [value] * count
    value = list(value)
    if len(value) != count:
        raise ValueError(f"{name} has {len(value)} values for {count} predictions")
    return value


def _covered_seconds(frames, duration: float) -> float:
    """Length of the union of the frames' [start, end] intervals inside [0, duration]."""
    spans = sorted((max(0.0, f.start), min(duration, f.end)) for f in frames if f.end > f.start)
    covered, reach = 0.0, 0.0
    for start, end in spans:
        start = max(start, reach)
        if end > start:
            covered += end - start
            reach = end
    return covered


def _bertscore(predictions, references, model, num_layers, batch_size, device):
    """BERTScore F1 (0-1) per prediction, best over its references; an empty prediction scores 0 (bert-score's own
    rule, applied here because bert-score 0.3.13 crashes on empty strings with transformers 5)."""
    from bert_score import BERTScorer  # imported only when BERTScore is asked for

    folder = Path(model)
    if not (folder / "config.json").is_file():
        raise ValueError(f"bertscore_model {model!r} is not a local encoder folder (no config.json); nothing is "
                         "downloaded from a hub by this metric")
    if num_layers is None:
        import json

        num_layers = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("num_hidden_layers")
        if not num_layers:
            raise ValueError(f"{folder}/config.json has no num_hidden_layers: pass bertscore_num_layers")
    key = (str(folder.resolve()), int(num_layers), int(batch_size), device)
    scorer = _SCORERS.get(key)
    if scorer is None:
        scorer = BERTScorer(model_type=str(folder), num_layers=int(num_layers), lang="en", batch_size=int(batch_size),
                            device=device)
        # bert-score truncates at the tokenizer's model_max_length; a tokenizer saved without one reports ~1e30,
        # which overflows: cap it at the encoder's position limit.
        tokenizer, encoder = getattr(scorer, "_tokenizer", None), getattr(scorer, "_model", None)
        limit = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
        if tokenizer is not None and limit and tokenizer.model_max_length > limit:
            tokenizer.model_max_length = limit
        _SCORERS[key] = scorer
    f1 = [0.0] * len(predictions)
    keep = [i for i, p in enumerate(predictions) if p.strip()]
    if keep:
        _, _, scores = scorer.score([predictions[i] for i in keep], [references[i] for i in keep],
                                    batch_size=int(batch_size))
        for i, value in zip(keep, scores.tolist()):
            f1[i] = value
    return f1, int(num_layers), scorer.hash


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class M2mvMvDescription(evaluate.Metric):
    """BLEU-1/4, ROUGE-L F1, BERTScore F1 and MV-structure metrics for m2mv's MV descriptions."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"),
                                   "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"),
                                   "references": datasets.Value("string")}),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu",
                           "https://github.com/google-research/google-research/tree/master/rouge",
                           "https://github.com/Tiiiger/bert_score"],
            reference_urls=["https://arxiv.org/abs/2503.11190"],
            license="apache-2.0",
        )

    def _compute(
        self,
        predictions,
        references,
        bertscore_model=None,
        bertscore_num_layers=None,
        bertscore_batch_size=16,
        bertscore_device=None,
        text_mode="content",
        bleu_tokenize=BLEU_TOKENIZE,
        bleu_lowercase=BLEU_LOWERCASE,
        bleu_smooth_method=BLEU_SMOOTH,
        rouge_use_stemmer=False,
        durations=None,
        expected_frames=None,
        beat_times=None,
        beat_tolerance=DEFAULT_BEAT_TOLERANCE,
    ):
        count = len(predictions)
        if count == 0:
            raise ValueError("no predictions to score")
        raw_refs = []
        for index, refs in enumerate(references):
            refs = [refs] if isinstance(refs, str) else list(refs)
            refs = [r for r in refs if r is not None and r.strip()]
            if not refs:
                raise ValueError(f"example {index}: the reference is empty (a prediction needs at least one "
                                 "non-empty reference)")
            raw_refs.append(refs)
        predictions = [p or "" for p in predictions]

        # -- text metrics ---------------------------------------------------------------------------------------
        preds_text = [scoring_text(p, text_mode) for p in predictions]
        refs_text = [[scoring_text(r, text_mode) for r in refs] for refs in raw_refs]
        width = max(len(refs) for refs in refs_text)
        streams = [[refs[k] if k < len(refs) else None for refs in refs_text] for k in range(width)]
        bleu_args = dict(tokenize=bleu_tokenize, lowercase=bleu_lowercase, smooth_method=bleu_smooth_method)
        bleu4 = BLEU(max_ngram_order=4, **bleu_args)
        bleu1 = BLEU(max_ngram_order=1, **bleu_args)
        bleu4_score = bleu4.corpus_score(preds_text, streams)
        bleu1_score = bleu1.corpus_score(preds_text, streams)

        rouge = rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeRougeTokenizer(rouge_use_stemmer))
        rouge_f = [rouge.score_multi(refs, pred)["rougeL"].fmeasure for refs, pred in zip(refs_text, preds_text)]

        result = {
            "bleu_1": bleu1_score.score,
            "bleu_4": bleu4_score.score,
            "rougeL_f1": 100.0 * sum(rouge_f) / count,
            "bertscore_f1": None,
        }
        if bertscore_model is not None:
            f1, layers, scorer_hash = _bertscore(preds_text, refs_text, bertscore_model, bertscore_num_layers,
                                                 bertscore_batch_size, bertscore_device)
            result["bertscore_f1"] = 100.0 * sum(f1) / count
        else:
            layers = scorer_hash = None

        # -- structure metrics ----------------------------------------------------------------------------------
        durations = _per_example(durations, count, "durations")
        expected_frames = _per_example(expected_frames, count, "expected_frames")
        beat_times = None if beat_times is None else _per_example(beat_times, count, "beat_times")
        parse_ok = overview_ok = 0
        frame_errors, coverages = [], []
        on_beat = boundaries = 0
        for index, (prediction, refs) in enumerate(zip(predictions, raw_refs)):
            reference = parse_mv_description(refs[0])
            duration = durations[index]
            if duration is None and reference.frames:
                duration = reference.frames[-1].end
            expected = expected_frames[index]
            if expected is None and reference.frames:
                expected = len(reference.frames)
            parsed = parse_mv_description(prediction, expected_duration=duration)
            parse_ok += not parsed.problems
            overview_ok += bool(parsed.overview)
            if expected is not None:
                frame_errors.append(abs(len(parsed.frames) - int(expected)))
            if duration:
                coverages.append(_covered_seconds(parsed.frames, float(duration)) / float(duration))
            if beat_times is not None and beat_times[index] is not None:
                beats = sorted(float(b) for b in beat_times[index])
                end = float(duration) if duration else math.inf
                cuts = sorted({round(t, 6) for f in parsed.frames for t in (f.start, f.end) if 1e-6 < t < end - 1e-6})
                boundaries += len(cuts)
                on_beat += sum(any(abs(t - b) <= beat_tolerance for b in beats) for t in cuts)
        result.update({
            "parse_rate": parse_ok / count,
            "overview_rate": overview_ok / count,
            "frame_count_error": sum(frame_errors) / len(frame_errors) if frame_errors else None,
            "timestamp_coverage": sum(coverages) / len(coverages) if coverages else None,
            "beat_alignment": (on_beat / boundaries if boundaries else None) if beat_times is not None else None,
            "num_examples": count,
            "text_mode": text_mode,
            "bleu_signature": str(bleu4.get_signature()),
            "bleu_1_signature": str(bleu1.get_signature()),
            "rouge_tokenizer": f"rouge-score LCS, unicode letters+digits, lowercase, stemmer={bool(rouge_use_stemmer)}",
            "bertscore_model": None if bertscore_model is None else str(bertscore_model),
            "bertscore_num_layers": layers,
            "bertscore_hash": scorer_hash,
        })
        return result
