"""The lyrics understanding (the paper's OpenMU step): theme, mood and story in a few sentences, by an LLM.

No lyrics, or lyrics that say the song is instrumental, give no understanding (None): never an invented one.
Used by the dataset pipeline and by ``m2mv describe --lyrics FILE``.
"""

from __future__ import annotations

import re

from m2mv.pipeline import prompts

MAX_NEW_TOKENS = 160
MAX_LYRICS_CHARS = 4000  # a song's lyrics; longer text is cut (the prompt must fit a small LM's context)
_INSTRUMENTAL = re.compile(r"^\W*(\[?\s*instrumental\s*\]?|no lyrics|n/?a)\W*$", re.IGNORECASE)


def has_lyrics(lyrics: str | None) -> bool:
    """Whether ``lyrics`` holds words to understand (not empty, not "instrumental")."""
    return bool(lyrics and lyrics.strip() and not _INSTRUMENTAL.match(lyrics.strip()))


def understand_lyrics(chat, lyrics: str | None) -> str | None:
    """A few sentences on what the song is about, or None without lyrics."""
    if not has_lyrics(lyrics):
        return None
    conversation = [{"role": "system", "content": prompts.LYRICS_SYSTEM},
                    {"role": "user", "content": prompts.LYRICS.format(lyrics=lyrics.strip()[:MAX_LYRICS_CHARS])}]
    (answer,) = chat.chat([conversation], max_new_tokens=MAX_NEW_TOKENS)
    answer = " ".join(answer.split())
    return answer or None
