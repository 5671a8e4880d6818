"""Music facts: does a prediction state the same measured facts of the music as its reference?

The demo dataset's descriptions are written from measurements of the audio with fixed words
(:mod:`m2mv.data.demo_words`): the overview names the clip's tempo word, genre, key, light (from its brightness) and
dynamics, and every frame's shot comes from the loudness of the 2-s window holding it. BLEU and ROUGE weigh these
few words like any other, and a model can score well on the template alone; these two figures score only the facts:

- ``music_facts``: of the facts the reference overview states (tempo, genre, key, light, dynamics), the share the
  prediction's overview states the same (a fact the prediction leaves out counts as wrong); per fact in
  ``music_facts_by_kind``;
- ``frame_shots``: of the reference frames that name a shot, the share whose time (the frame's midpoint) falls in a
  prediction frame naming the same shot. A frame's shot is its loudness against the clip's own, so no fixed
  answer gets more than about a third of them: only a model that hears which stretch is loud does.

References without these words (any dataset but the demo's) give None: the table shows "-".

:func:`constant_answer_ceiling` gives, for the same references, the most a constant answer (one text whatever the
music) can score: a model whose answers do not depend on the music scores no higher.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from m2mv.data.demo_words import DYNAMICS_WORDS, LIGHT_BY_BRIGHTNESS, MODES, SHOT_BY_LEVEL, tempo_words
from mv_format_m2mv import parse_mv_description

FACT_KINDS = ("tempo", "genre", "key", "light", "dynamics")


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))  # longest first: "very fast"


_TEMPO = _alternation(tempo_words())
_PATTERNS = {
    "tempo": re.compile(rf"(?<![\w-])({_TEMPO})(?![\w-])", re.IGNORECASE),
    "genre": re.compile(rf"\bfor an? (?:(?:{_TEMPO}),? )?(.+?) track\b", re.IGNORECASE),  # tempo word optional
    "key": re.compile(rf"\b([A-G][#b]? (?:{'|'.join(MODES)}))\b"),
    "light": re.compile(rf"({_alternation(LIGHT_BY_BRIGHTNESS.values())})", re.IGNORECASE),
    "dynamics": re.compile(rf"\b({_alternation(DYNAMICS_WORDS)})\b", re.IGNORECASE),
}
_SHOT = re.compile(f"({_alternation(SHOT_BY_LEVEL.values())})", re.IGNORECASE)


def overview_facts(overview: str) -> dict[str, str]:
    """The facts an overview states: kind -> the (lowercased, except the key) value, first mention of each."""
    facts = {}
    for kind, pattern in _PATTERNS.items():
        match = pattern.search(overview or "")
        if match:
            facts[kind] = match.group(1) if kind == "key" else match.group(1).lower()
    return facts


def frame_shots(frames) -> list[tuple[float, float, str | None]]:
    """``(start, end, shot or None)`` of each parsed frame."""
    shots = []
    for frame in frames:
        match = _SHOT.search(frame.text)
        shots.append((frame.start, frame.end, match.group(1).lower() if match else None))
    return shots


def _shot_at(shots, time_s: float) -> str | None:
    return next((shot for start, end, shot in shots if start <= time_s < end), None)


def score_music_facts(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """``music_facts``, ``music_facts_by_kind`` and ``frame_shots`` (0-1 shares, None without facts to check) of
    predictions against references; see the module docstring."""
    right = {kind: 0 for kind in FACT_KINDS}
    stated = {kind: 0 for kind in FACT_KINDS}
    shots_right = shots_stated = 0
    for prediction, reference in zip(predictions, references, strict=True):
        ref, pred = parse_mv_description(reference or ""), parse_mv_description(prediction or "")
        ref_facts, pred_facts = overview_facts(ref.overview), overview_facts(pred.overview)
        for kind, value in ref_facts.items():
            stated[kind] += 1
            right[kind] += pred_facts.get(kind) == value
        pred_shots = frame_shots(pred.frames)
        for start, end, shot in frame_shots(ref.frames):
            if shot is not None:
                shots_stated += 1
                shots_right += _shot_at(pred_shots, (start + end) / 2) == shot
    total = sum(stated.values())
    return {
        "music_facts": sum(right.values()) / total if total else None,
        "music_facts_by_kind": {kind: right[kind] / stated[kind] for kind in FACT_KINDS if stated[kind]},
        "frame_shots": shots_right / shots_stated if shots_stated else None,
    }


def constant_answer_ceiling(references: Sequence[str]) -> dict:
    """The most one text given for every reference can score: ``music_facts`` (each fact kind's most common value
    among the references) and ``frame_shots`` (at each frame time, the most common shot), None as in
    :func:`score_music_facts`. The best constant answer is chosen knowing the references, so this bounds any
    answer that ignores the music, the ones a model writes for zeroed audio included."""
    values: dict[str, Counter] = {kind: Counter() for kind in FACT_KINDS}
    shots: dict[float, Counter] = {}
    for reference in references:
        parsed = parse_mv_description(reference or "")
        for kind, value in overview_facts(parsed.overview).items():
            values[kind][value] += 1
        for start, end, shot in frame_shots(parsed.frames):
            if shot is not None:
                shots.setdefault(round((start + end) / 2, 3), Counter())[shot] += 1
    stated = sum(sum(c.values()) for c in values.values())
    shots_stated = sum(sum(c.values()) for c in shots.values())
    return {
        "music_facts": sum(max(c.values(), default=0) for c in values.values()) / stated if stated else None,
        "frame_shots": sum(max(c.values()) for c in shots.values()) / shots_stated if shots_stated else None,
    }
