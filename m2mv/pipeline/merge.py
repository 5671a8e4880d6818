"""Merging the frame captions (and the scene cuts) into an MV description with an LLM.

The answer must be the JSON of :func:`m2mv.pipeline.prompts.merge_schema` (an in-process model is constrained to
it); it is rendered with m2mv's formatter and must pass m2mv's parser with the expected frames. An answer that does
not is retried with its problems fed back; after ``attempts`` tries the song fails with the last problems.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from m2mv.errors import PipelineError
from m2mv.pipeline import prompts
from m2mv.pipeline.models import load_json_object
from mv_format_m2mv import format_mv_description, frame_boundary_problem, parse_mv_description

DEFAULT_ATTEMPTS = 3


def max_new_tokens(frames: int) -> int:
    """The answer's token budget: room for the schema's longest overview and frame texts (about 4 characters a
    token) and the JSON around them."""
    return 32 + (prompts.OVERVIEW_MAX_CHARS + frames * (prompts.FRAME_MAX_CHARS + 8)) // 4


@dataclass
class Merged:
    """An MV description and how many answers it took."""

    description: str
    attempts: int


def check_answer(answer: str, spans: Sequence[tuple[float, float]]) -> tuple[str | None, list[str]]:
    """``(description, problems)`` of one answer: the rendered description when it is usable, else the problems."""
    value = load_json_object(answer)
    if value is None:
        return None, ["the answer is not a JSON object"]
    overview, frames = value.get("overview"), value.get("frames")
    if not isinstance(overview, str) or not overview.strip():
        return None, ["the JSON has no overview"]
    if not isinstance(frames, list) or len(frames) != len(spans) or not all(isinstance(f, str) and f.strip()
                                                                              for f in frames):
        count = len(frames) if isinstance(frames, list) else 0
        return None, [f"the JSON has {count} frame texts, {len(spans)} were asked for (one per frame, none empty)"]
    description = format_mv_description(overview, [(s, e, text) for (s, e), text in zip(spans, frames)])
    parsed = parse_mv_description(description, expected_duration=spans[-1][1])
    problem = frame_boundary_problem([(f.start, f.end) for f in parsed.frames], spans)
    problems = parsed.problems + ([problem] if problem else [])
    return (description, []) if not problems else (None, problems)


def merge_captions(chat, captions: Sequence[str], spans: Sequence[tuple[float, float]], cuts: Sequence[int | None],
                   genre_tags: Sequence[str] = (), attempts: int = DEFAULT_ATTEMPTS, song: str = "song") -> Merged:
    """The MV description of one song from its frames' captions; PipelineError naming ``song`` when no answer of
    ``attempts`` is usable."""
    problems: list[str] = []
    for attempt in range(1, attempts + 1):
        conversation = prompts.merge_conversation(captions, spans, cuts, genre_tags, problems)
        (answer,) = chat.chat([conversation], max_new_tokens=max_new_tokens(len(spans)),
                              json_schema=prompts.merge_schema(len(spans)))
        description, problems = check_answer(answer, spans)
        if description is not None:
            return Merged(description, attempt)
    raise PipelineError(f"{song}: no usable description after {attempts} answers from {chat.name}: "
                        + "; ".join(problems))
