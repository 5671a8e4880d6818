"""The pipeline's prompts: the one versioned place they live.

``PROMPT_VERSION`` goes into every record and every dataset row's provenance; change it whenever a prompt
changes, so that reruns redo what the new prompts would write differently.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from mv_format_m2mv import format_frame_span

PROMPT_VERSION = "1"

CAPTION = ("Describe this frame of a music video in one sentence: who or what is in it, the setting, the light and "
           "the camera.")

MERGE_SYSTEM = ("You write descriptions of music videos for a video director: an overview of the whole video, then "
                "what the video shows in each time frame. Write plain, concrete sentences.")

LYRICS_SYSTEM = "You read song lyrics and say what the song is about."
LYRICS = ("Here are the lyrics of a song:\n\n{lyrics}\n\nIn two or three sentences, say what the song is about: its "
          "theme, its mood and the story it tells, if any. Do not quote the lyrics.")

MV_TYPE = ("Here is what the frames of a music video show:\n{captions}\n\nWhich one of these types of music video "
           "is it? {types}. Answer with the type only.")


OVERVIEW_MAX_CHARS = 400
FRAME_MAX_CHARS = 200


def merge_schema(frames: int) -> dict:
    """The JSON shape a merge answer must have: an overview and exactly ``frames`` frame texts, each bounded (so
    that a constrained answer always closes within its token budget)."""
    line = "^\\S[^\\n]*$"  # one line that starts with a visible character: never blank
    text = {"type": "string", "minLength": 1, "maxLength": FRAME_MAX_CHARS, "pattern": line}
    overview = {"type": "string", "minLength": 1, "maxLength": OVERVIEW_MAX_CHARS, "pattern": line}
    return {"type": "object", "additionalProperties": False, "required": ["overview", "frames"],
            "properties": {"overview": overview,
                           "frames": {"type": "array", "minItems": frames, "maxItems": frames, "items": text}}}


def merge_conversation(captions: Sequence[str], spans: Sequence[tuple[float, float]], cuts: Sequence[int | None],
                       genre_tags: Sequence[str] = (), problems: Sequence[str] = ()) -> list[dict]:
    """The whole merge conversation: the instruction, one worked example (small LMs need it to answer in shape),
    then this song's frames."""
    return [{"role": "system", "content": MERGE_SYSTEM},
            {"role": "user", "content": merge(*MERGE_EXAMPLE["input"])},
            {"role": "assistant", "content": json.dumps(MERGE_EXAMPLE["answer"])},
            {"role": "user", "content": merge(captions, spans, cuts, genre_tags, problems)}]


MERGE_EXAMPLE = {
    "input": (["A woman walks along a beach at sunset.", "Waves break on the rocks."], [(0.0, 2.0), (2.0, 4.0)],
              [0, 2], ["pop"]),
    "answer": {"overview": "A woman walks alone along a beach at sunset while the waves roll in.",
               "frames": ["She walks along the sand at sunset.", "Waves break on the rocks in two quick cuts."]},
}


def merge(captions: Sequence[str], spans: Sequence[tuple[float, float]], cuts: Sequence[int | None],
          genre_tags: Sequence[str] = (), problems: Sequence[str] = ()) -> str:
    """The merge request: what each frame shows (its caption and scene cuts), and the JSON to answer with."""
    lines = []
    for (start, end), caption, cut in zip(spans, captions, cuts):
        cut_note = "" if cut is None else f" ({cut} cut{'s' if cut != 1 else ''})"
        lines.append(f"{format_frame_span(start, end)}{cut_note} {caption}")
    genre = f"The song's genres: {', '.join(genre_tags)}.\n" if genre_tags else ""
    retry = ""
    if problems:
        retry = ("\nYour previous answer could not be used: " + "; ".join(problems) + ". Answer again.")
    return (f"{genre}A music video, frame by frame (a caption of the frame in the middle of each time frame, and how "
            f"many scene cuts the frame has):\n" + "\n".join(lines) +
            f"\n\nWrite an overview of the whole video in one or two sentences, then one sentence for each of the "
            f"{len(spans)} frames, in order. Answer with JSON only: "
            '{"overview": "...", "frames": ["...", ...]} with exactly ' + f"{len(spans)} frames." + retry)
