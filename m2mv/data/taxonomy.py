"""The MV-type taxonomy, read from its one data file (``m2mv/data/mv_types.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class MVType:
    """One MV type: its ``name`` (the label), what it shows, a typical ``setting`` and the genre words that hint at it."""

    name: str
    description: str
    setting: str
    genre_hints: tuple[str, ...]


@lru_cache(maxsize=1)
def mv_type_entries() -> tuple[MVType, ...]:
    """The taxonomy's 10 types, in the data file's order."""
    data = json.loads(resources.files("m2mv.data").joinpath("mv_types.json").read_text(encoding="utf-8"))
    return tuple(MVType(t["name"], t["description"], t["setting"], tuple(t["genre_hints"])) for t in data["types"])


def load_mv_types() -> list[str]:
    """The 10 MV-type names, in the data file's order."""
    return [entry.name for entry in mv_type_entries()]


def canonical_mv_type(name: str) -> str:
    """The taxonomy's spelling of ``name`` (case-insensitive); an unknown type is a ValueError listing the known."""
    known = {entry.name.casefold(): entry.name for entry in mv_type_entries()}
    key = name.strip().casefold() if isinstance(name, str) else None
    if key not in known:
        raise ValueError(f"unknown MV type {name!r}; known types: {', '.join(load_mv_types())}")
    return known[key]


def mv_type(name: str) -> MVType:
    """The entry of a type, by name (case-insensitive)."""
    canonical = canonical_mv_type(name)
    return next(entry for entry in mv_type_entries() if entry.name == canonical)


def mv_type_from_genre(genre: str) -> str | None:
    """The type whose genre hint is mentioned first in ``genre`` (case-insensitive), or None when none is."""
    lowered = genre.casefold()
    found = [(lowered.find(hint), entry.name) for entry in mv_type_entries() for hint in entry.genre_hints
             if hint in lowered]
    return min(found)[1] if found else None
