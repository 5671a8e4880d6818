"""The MV-type taxonomy, read from its one data file (``m2mv/data/mv_types.json``)."""

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _taxonomy() -> dict:
    return json.loads(resources.files("m2mv").joinpath("data/mv_types.json").read_text(encoding="utf-8"))


def load_mv_types() -> list[str]:
    """The 10 MV-type names, in the data file's order."""
    return [entry["name"] for entry in _taxonomy()["types"]]


def mv_type_descriptions() -> dict[str, str]:
    """MV-type name -> one-line description."""
    return {entry["name"]: entry["description"] for entry in _taxonomy()["types"]}
