"""The metric module (metrics/m2mv_mv_description): every number against an independent computation.

- BLEU-1/4: sacrebleu (the module) vs nltk's corpus_bleu on the same tokens (sacrebleu's 13a tokeniser, lowercased)
  with nltk's method3 smoothing, which is sacrebleu's "exp";
- ROUGE-L F1: hand-checked LCS examples;
- BERTScore F1: identical texts give 100 and an empty prediction 0, with a tiny random BERT encoder built here
  (the real small encoder is in test_metric_bertscore_real.py);
- structure metrics: hand-computed on descriptions written with the package's own formatter;
- edge cases: empty prediction, empty reference, one vs many references, non-ASCII text, mismatched lengths.
"""

from pathlib import Path

import evaluate
import pytest
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from mv_format_m2mv import MVFrame, format_mv_description, frame_boundaries

METRIC_DIR = Path(__file__).resolve().parent.parent / "m2mv" / "evaluation" / "metrics" / "m2mv_mv_description"


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(str(METRIC_DIR), keep_in_memory=True)


def describe(overview: str, texts: list[str], step: float = 2.0) -> str:
    return format_mv_description(overview, [MVFrame(i * step, (i + 1) * step, t) for i, t in enumerate(texts)])


# Fixed corpus: (prediction, [references]) as overview + frame texts; the words are what BLEU/ROUGE score.
CORPUS = [
    (("A band plays on a dark stage under red lights.", ["The drummer counts in.", "Sparks fall behind the singer."]),
     [("A rock band performs on a dark stage lit in red.", ["The drummer counts the band in.",
                                                             "Sparks rain down behind the singer."]),
      ("A band plays a concert at night.", ["Drums start.", "The singer steps into the light."])]),
    (("Two friends drive along a desert road at sunset.", ["The car passes a cactus.", "They laugh."]),
     [("Two friends travel down a desert road as the sun sets.", ["Their car passes cacti.", "Both of them laugh."])]),
    (("Animated shapes bounce to the beat.", ["A blue circle grows.", "Triangles spin."]),
     [("Colourful animated shapes move to the music.", ["A blue circle expands.", "Triangles spin in the air."])]),
    (("A dancer moves alone in an empty hall.", ["Slow motion close-up of her feet."]),
     [("A dancer performs alone in a large empty hall.", ["A slow close-up of her feet on the wooden floor."])]),
]


def words(overview: str, texts: list[str]) -> str:
    return " ".join([overview] + texts)


def nltk_bleu(hyps: list[str], refs: list[list[str]], order: int) -> float:
    """nltk corpus BLEU on sacrebleu's 13a tokens of the lowercased text (the module's tokenisation)."""
    tok = Tokenizer13a()
    split = lambda text: tok(text.lower()).split()  # noqa: E731
    return 100 * corpus_bleu([[split(r) for r in rs] for rs in refs], [split(h) for h in hyps],
                             weights=tuple([1.0 / order] * order), smoothing_function=SmoothingFunction().method3)


def test_loads_from_folder_and_file_and_reports_settings(metric):
    by_file = evaluate.load(str(METRIC_DIR / "m2mv_mv_description.py"), keep_in_memory=True)
    text = describe("A band plays.", ["The drummer counts in."])
    a = metric.compute(predictions=[text], references=[text])
    b = by_file.compute(predictions=[text], references=[text])
    assert a == b
    assert metric.name == "m2mv_mv_description"
    assert a["bleu_signature"].startswith("nrefs:1|case:lc|eff:no|tok:13a|smooth:exp")
    assert a["bertscore_f1"] is None and a["bertscore_model"] is None  # not asked for: not computed
    assert a["text_mode"] == "content" and a["num_examples"] == 1


def test_bleu_equals_nltk_on_the_same_tokens(metric):
    preds = [describe(*p) for p, _ in CORPUS]
    refs = [[describe(*r) for r in rs] for _, rs in CORPUS]
    result = metric.compute(predictions=preds, references=refs)
    hyp_words = [words(*p) for p, _ in CORPUS]
    ref_words = [[words(*r) for r in rs] for _, rs in CORPUS]
    expected_1, expected_4 = nltk_bleu(hyp_words, ref_words, 1), nltk_bleu(hyp_words, ref_words, 4)
    assert 20 < expected_4 < expected_1 < 90  # a realistic, non-degenerate case
    assert result["bleu_1"] == pytest.approx(expected_1, abs=1e-9)
    assert result["bleu_4"] == pytest.approx(expected_4, abs=1e-9)
    assert result["bleu_signature"].startswith("nrefs:var")  # 2, 1, 1, 1 references


def test_bleu_smoothing_equals_nltk_method3_when_no_4gram_matches(metric):
    # No 4-gram in common anywhere: sacrebleu's "exp" smoothing and nltk's method3 must agree.
    preds = ["red lights flash over dancing people in a club", "a man walks a dog slowly"]
    refs = [["people dance in a club under lights"], ["the dog walks beside a man"]]
    result = metric.compute(predictions=preds, references=refs, text_mode="raw")
    assert result["bleu_4"] == pytest.approx(nltk_bleu(preds, [r for r in refs], 4), abs=1e-9)
    assert result["bleu_1"] == pytest.approx(nltk_bleu(preds, [r for r in refs], 1), abs=1e-9)
    tok = Tokenizer13a()
    with pytest.warns(UserWarning, match="4-gram overlaps"):  # nltk says so when a count is 0
        unsmoothed = corpus_bleu([[tok(r.lower()).split() for r in rs] for rs in refs],
                                 [tok(p.lower()).split() for p in preds])
    assert unsmoothed < 1e-50 and result["bleu_4"] > 1  # no 4-gram matches: the smoothing path was taken


def test_rouge_l_hand_checked(metric):
    # 1) ref "the cat sat on the mat" / pred "the cat lay on a mat": LCS "the cat on mat" = 4 -> P = R = 4/6, F = 2/3
    # 2) ref "a band plays on a dark stage" (7) / pred "band plays" (2): LCS 2 -> P = 1, R = 2/7, F = 4/9
    # mean F = (2/3 + 4/9) / 2 = 5/9
    result = metric.compute(predictions=["The cat lay on a mat.", "Band plays"],
                            references=["the cat sat on the mat", "A band plays on a dark stage."])
    assert result["rougeL_f1"] == pytest.approx(100 * 5 / 9, abs=1e-9)


def test_rouge_l_many_references_take_the_best(metric):
    one = metric.compute(predictions=["band plays"], references=[["a band plays on a dark stage"]])
    many = metric.compute(predictions=["band plays"], references=[["a band plays on a dark stage", "band plays loud"]])
    assert one["rougeL_f1"] == pytest.approx(100 * 4 / 9)
    assert many["rougeL_f1"] == pytest.approx(100 * 0.8)  # LCS 2: P = 1, R = 2/3, F = 0.8


def test_one_vs_many_references(metric):
    a = describe("A crowd sings along in a stadium.", ["Confetti falls.", "The singer waves."])
    b = describe("Dancers in white move through fog.", ["A spotlight sweeps.", "The dancers freeze."])
    assert metric.compute(predictions=[b], references=[a]) == metric.compute(predictions=[b], references=[[a]])
    single = metric.compute(predictions=[b], references=[[a]])
    multi = metric.compute(predictions=[b], references=[[a, b]])
    assert single["bleu_4"] < 10 and single["rougeL_f1"] < 40
    assert multi["bleu_1"] == pytest.approx(100) and multi["bleu_4"] == pytest.approx(100)
    assert multi["rougeL_f1"] == pytest.approx(100)
    # Structure metrics read the first reference: a 2-frame, 4-s clip either way.
    assert single["frame_count_error"] == multi["frame_count_error"] == 0


def test_empty_prediction(metric):
    ref = describe("A band plays on a dark stage.", ["The drummer counts in.", "Sparks fall."])
    result = metric.compute(predictions=[""], references=[ref])
    assert result["bleu_1"] == result["bleu_4"] == result["rougeL_f1"] == 0
    assert result["parse_rate"] == 0 and result["overview_rate"] == 0
    assert result["timestamp_coverage"] == 0 and result["frame_count_error"] == 2
    # One empty output among good ones lowers the corpus scores through the brevity penalty (sys_len < ref_len).
    both = metric.compute(predictions=[ref, ""], references=[ref, ref])
    assert both["bleu_1"] == pytest.approx(100 * 2.718281828459045 ** (1 - 2))  # BP = exp(1 - 2n/n)
    assert both["rougeL_f1"] == pytest.approx(50) and both["parse_rate"] == 0.5


def test_empty_reference_is_an_error(metric):
    with pytest.raises(ValueError, match="example 1: the reference is empty"):
        metric.compute(predictions=["a", "b"], references=["a", "  "])
    with pytest.raises(ValueError, match="example 0: the reference is empty"):
        metric.compute(predictions=["a"], references=[["", ""]])
    # An empty reference beside a real one is dropped, not scored as a zero-length reference.
    kept = metric.compute(predictions=["a band plays on stage"], references=[["", "a band plays on stage"]])
    assert kept["bleu_4"] == pytest.approx(100) and kept["bleu_signature"].startswith("nrefs:1")


def test_non_ascii_text(metric):
    text = "Überall tanzen Menschen, während die Kamera über São Paulo fährt. Ça déménage ! 東京 の 夜 ネオン"
    result = metric.compute(predictions=[text.upper()], references=[text], text_mode="raw")
    assert result["bleu_1"] == pytest.approx(100) and result["bleu_4"] == pytest.approx(100)  # lowercased BLEU
    assert result["rougeL_f1"] == pytest.approx(100)
    # rouge-score's default tokeniser keeps only [a-z0-9]: CJK words vanish, "são" becomes "s" "o".
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rougeL"]).score("東京 の 夜 ネオン", "東京 の 夜")["rougeL"].fmeasure
    ours = metric.compute(predictions=["東京 の 夜"], references=["東京 の 夜 ネオン"])["rougeL_f1"]
    assert default == 0 and ours == pytest.approx(100 * 2 * 1 * 0.75 / 1.75)  # LCS 3: P 1, R 3/4
    partial = metric.compute(predictions=["Café in São Paulo"], references=["a café in são paulo at night"])
    assert partial["rougeL_f1"] == pytest.approx(100 * 2 * 1 * (4 / 7) / (1 + 4 / 7))


def test_content_mode_ignores_the_format_scaffolding(metric):
    ref = describe("A band plays on a dark stage.", ["The drummer counts in.", "Sparks fall."])
    wrong = describe("Kittens nap.", ["Rain.", "Snow."])
    content = metric.compute(predictions=[wrong], references=[ref])
    raw = metric.compute(predictions=[wrong], references=[ref], text_mode="raw")
    assert content["bleu_4"] < 5 and content["bleu_1"] < 15 and content["rougeL_f1"] == 0  # only "." matches
    assert raw["bleu_1"] > content["bleu_1"] + 30 and raw["rougeL_f1"] > 30  # headers and timestamps alone score
    with pytest.raises(ValueError, match="text_mode must be one of"):
        metric.compute(predictions=[wrong], references=[ref], text_mode="words")


def test_content_mode_keeps_stray_text(metric):
    # Text the parser calls stray (after the frames) is still scored: no generated word is dropped.
    ref = describe("A band plays.", ["Drums start."]) + "\nThen the lights go out."
    pred = describe("A band plays.", ["Drums start."])
    result = metric.compute(predictions=[pred], references=[ref])
    assert result["rougeL_f1"] == pytest.approx(100 * 2 * (5 / 5) * (5 / 10) / (1 + 5 / 10))


def test_structure_metrics_hand_computed(metric):
    boundaries = frame_boundaries(30.0)  # 15 frames of 2 s
    reference = describe("A band plays on a dark stage.", [f"Shot {i}." for i in range(15)])
    perfect = describe("Something else entirely.", [f"Other {i}." for i in range(15)])
    # 10 frames (0-20 s), then a cut-off frame line: parse problems, 10 frames, 20 of 30 s covered
    truncated = describe("A band.", [f"Shot {i}." for i in range(10)]) + "\n[00:20-00:2"
    # overlapping frames 0-4, 2-6, 10-12 and no overview: union 6 + 2 = 8 s
    overlapping = "Frames:\n[00:00-00:04] a\n[00:02-00:06] b\n[00:10-00:12] c"
    result = metric.compute(predictions=[perfect, truncated, overlapping], references=[reference] * 3)
    assert len(boundaries) == 15
    assert result["parse_rate"] == pytest.approx(1 / 3)
    assert result["overview_rate"] == pytest.approx(2 / 3)
    assert result["frame_count_error"] == pytest.approx((0 + 5 + 12) / 3)
    assert result["timestamp_coverage"] == pytest.approx((1 + 20 / 30 + 8 / 30) / 3)
    assert result["beat_alignment"] is None  # no beat times given
    # Explicit durations and expected counts override the reference's.
    given = metric.compute(predictions=[perfect], references=[reference], durations=[60.0], expected_frames=[20])
    assert given["timestamp_coverage"] == pytest.approx(0.5) and given["frame_count_error"] == 5
    assert given["parse_rate"] == 0  # the frames end before the 60-s clip does


def test_beat_alignment_hand_computed(metric):
    beats = [0.0, 2.0, 4.0, 6.0, 8.0]
    # cuts at 1.9 (0.1 s off), 4.05 (on), 6.5 (off); 0 and the 8-s end are not cuts
    a = format_mv_description("Shots on the beat.", [(0, 1.9, "a"), (1.9, 4.05, "b"), (4.05, 6.5, "c"), (6.5, 8, "d")])
    # cuts at 2, 4.02, 6 (all on)
    b = format_mv_description("Shots on the beat.", [(0, 2, "a"), (2, 4.02, "b"), (4.02, 6, "c"), (6, 8, "d")])
    result = metric.compute(predictions=[a, b], references=[b, b], beat_times=[beats, beats])
    assert result["beat_alignment"] == pytest.approx(4 / 6)
    strict = metric.compute(predictions=[a, b], references=[b, b], beat_times=[beats, beats], beat_tolerance=0.01)
    assert strict["beat_alignment"] == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="beat_times has 1 values for 2 predictions"):
        metric.compute(predictions=[a, b], references=[b, b], beat_times=[beats])


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny random BERT encoder + WordPiece vocab saved as a local folder (fast BERTScore plumbing tests)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + sorted(set(
        "a the band plays on dark stage drummer counts in sparks fall cat dog sat mat lights red two friends drive "
        "road desert car dancer moves alone hall shapes bounce beat tax law of 1990 kittens nap rain snow".split()))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)  # no model_max_length: the metric caps it
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(folder)
    return folder


def test_bertscore_plumbing_with_a_tiny_encoder(metric, tiny_bert):
    same = "a band plays on a dark stage ."
    result = metric.compute(predictions=[same, "", "kittens nap"], references=[[same], [same], ["tax law of 1990", same]],
                            bertscore_model=str(tiny_bert))
    # identical text: cosine 1 for every token -> F1 1; empty prediction: 0 (bert-score's rule)
    one_by_one = [metric.compute(predictions=[p], references=[r], bertscore_model=str(tiny_bert))["bertscore_f1"]
                  for p, r in [(same, [same]), ("kittens nap", ["tax law of 1990", same])]]
    assert one_by_one[0] == pytest.approx(100, abs=1e-3)
    assert result["bertscore_f1"] == pytest.approx((100 + 0 + one_by_one[1]) / 3, abs=1e-3)
    many = metric.compute(predictions=["kittens nap"], references=[["tax law of 1990", "kittens nap"]],
                          bertscore_model=str(tiny_bert))
    assert many["bertscore_f1"] == pytest.approx(100, abs=1e-3)  # the best reference counts
    assert result["bertscore_model"] == str(tiny_bert) and result["bertscore_num_layers"] == 2
    assert "_L2_no-idf" in result["bertscore_hash"]


def test_bertscore_needs_a_local_encoder_folder(metric, tmp_path):
    with pytest.raises(ValueError, match="is not a local encoder folder"):
        metric.compute(predictions=["a"], references=["a"], bertscore_model=str(tmp_path / "roberta-large"))

