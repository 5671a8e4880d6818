"""Does the model's likelihood of a song's reference answer depend on that song's music?

The teacher-forced loss of each reference answer under the music-only prompt, three ways: with the row's own audio,
with another song's audio (the benchmark's ``other_audio`` partner, :func:`m2mv.evaluation.conditions.
other_audio_rows`: real music of other genre tags, an input of the training distribution) and with the audio zeroed
(all-zero encoder features, as training's ``zero_audio``). Free generation hides small effects (greedy decoding can
give one text whatever the audio); the loss of the reference shows them. A model that hears its own clip scores it
lowest; one that only tells music from silence scores own and other alike, below zeroed.

    python benchmarks/audio_use.py ...        # after training, for each run's final checkpoint
    answer_losses(model, processor, ds)       # one checkpoint, one split
"""

from __future__ import annotations

import torch

from m2mv.data.embeddings import zero_audio_features
from m2mv.data.schema import MV_DESCRIPTION, TARGET_COLUMN
from m2mv.evaluation.conditions import other_audio_rows

AUDIO_SOURCES = ("own", "other", "zeroed")


def _answer_loss(model, processor, prompt: str, audio, answer: str, max_length: int | None,
                 zeroed: bool = False) -> float:
    inputs = processor(text=[prompt], audio=[audio], answers=[answer], max_length=max_length)
    if zeroed:
        features = inputs["input_features"]
        inputs["input_features"] = zero_audio_features(model).to(features.dtype).expand(features.shape).contiguous()
    with torch.no_grad():
        return float(model(**inputs).loss)


def answer_losses(model, processor, ds, config: str = MV_DESCRIPTION, rows: int | None = None,
                  max_length: int | None = None) -> list[dict]:
    """Per row of ``ds`` (the first ``rows``): ``song_id``, ``audio_from`` (the other song) and the mean token loss
    of its ``config`` target under the music-only prompt with each of :data:`AUDIO_SOURCES`. ``max_length`` cuts
    prompt + answer, as training's ``max_length`` does."""
    rows = len(ds) if rows is None else min(rows, len(ds))
    partners = other_audio_rows(ds, rows)
    head = ds.select(range(rows))
    audio = [processor.decode_audio(value) for value in head["audio"]]
    prompt, target = processor.build_prompt(config), TARGET_COLUMN[config]
    was_training = model.training
    model.eval()
    try:
        results = []
        for i, (song, answer) in enumerate(zip(head["song_id"], head[target])):
            losses = {"own": _answer_loss(model, processor, prompt, audio[i], answer, max_length),
                      "other": _answer_loss(model, processor, prompt, audio[partners[i]], answer, max_length),
                      "zeroed": _answer_loss(model, processor, prompt, audio[i], answer, max_length, zeroed=True)}
            results.append({"song_id": song, "audio_from": head["song_id"][partners[i]], **losses})
        return results
    finally:
        model.train(was_training)


def summarize_answer_losses(results: list[dict]) -> dict:
    """Mean loss per audio source and on how many rows the own audio scores below the other song's / zeroed."""
    n = len(results)
    return {"rows": n, **{f"mean_{s}": sum(r[s] for r in results) / n for s in AUDIO_SOURCES},
            "own_below_other": sum(r["own"] < r["other"] for r in results),
            "own_below_zeroed": sum(r["own"] < r["zeroed"] for r in results)}


def format_answer_losses(summary: dict) -> str:
    """One line: ``own 0.4310, other 0.4360, zeroed 0.9000; own below other on 11 of 11 rows, below zeroed on ...``."""
    return (f"own {summary['mean_own']:.4f}, other {summary['mean_other']:.4f}, zeroed {summary['mean_zeroed']:.4f};"
            f" own below other on {summary['own_below_other']} of {summary['rows']} rows, below zeroed on "
            f"{summary['own_below_zeroed']}")
