"""transformers' own common model tests (``ModelTesterMixin``, ``ConfigTester``), for m2mv's test suite.

The sdist of the installed transformers (``python -m pip download --no-deps --no-binary :all:``) ships
``tests/test_modeling_common.py`` and ``tests/test_configuration_common.py``. They are fetched on first use, reduced
to those two files (and the LICENSE) and cached outside the repository under
``$XDG_CACHE_HOME/m2mv/reference/transformers-<version>/`` (default ``~/.cache/m2mv/reference``), the way
:mod:`reference_oracles` caches its oracles. Importing this module downloads nothing; :func:`load_common_tests` does.

The two files import siblings that the sdist does not ship (``.exporters.test_export``, ``.generation.test_utils``,
``.utils.test_configuration_utils``). They are loaded as the package :data:`PACKAGE` with small stand-ins for those
siblings, registered in ``sys.modules`` only while they import.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import types
import warnings
from pathlib import Path

import pytest

from reference_oracles import _ensure_reference, _extract_tar, _module, _scoped_modules

TRANSFORMERS_VERSION = importlib.metadata.version("transformers")
PACKAGE = "_m2mv_reference_transformers_tests"

_MODELING_COMMON = "tests/test_modeling_common.py"
_CONFIGURATION_COMMON = "tests/test_configuration_common.py"
# The sdist has no tests/__init__.py; test_configuration_common.py runs `direct_transformers_import(its folder)`,
# which executes that folder's __init__.py, so an empty one is written next to the two files.
_PACKAGE_MARKER = "tests/__init__.py"


def _transformers_tests_dir() -> Path:
    """The cached ``tests`` folder of the installed transformers' sdist, fetched on first use."""
    src = f"transformers-{TRANSFORMERS_VERSION}"

    def extract(archive: Path, out: Path) -> None:
        members = {f"{src}/{rel}": rel for rel in (_MODELING_COMMON, _CONFIGURATION_COMMON)}
        _extract_tar(archive, out, {**members, f"{src}/LICENSE": "LICENSE"})
        (out / _PACKAGE_MARKER).write_text("# m2mv: package marker (transformers' sdist ships no tests/__init__.py)\n")

    folder = _ensure_reference(
        "transformers", TRANSFORMERS_VERSION, extract,
        required=(_MODELING_COMMON, _CONFIGURATION_COMMON, _PACKAGE_MARKER),
        pip_args=("--no-binary=:all:",),
    )
    return folder / "tests"


class ExportTesterMixin:
    """Stand-in for transformers' ``tests/exporters/test_export.py`` mixin, which the sdist does not ship.

    transformers' own export (``torch.export``) tests are therefore not run; m2mv is not exported.
    """


class GenerationTesterMixin:
    """Stand-in for transformers' ``tests/generation/test_utils.py`` mixin, which the sdist does not ship.

    transformers' own generation tests are therefore not run here; m2mv's generation (greedy with/without cache,
    batching with left padding, audio on the first step only, static cache and compiled forward) is tested by its
    own tests in ``tests/test_modeling.py``.
    """


# Common ``PreTrainedConfig`` arguments, each set to a value other than its default, for
# ``ConfigTester.check_config_arguments_init`` (transformers keeps its own in tests/utils/test_configuration_utils.py).
config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 4,
    "architectures": ["M2MVForConditionalGeneration"],
    "id2label": {0: "calm", 1: "energetic", 2: "dark"},
    "label2id": {"calm": 0, "energetic": 1, "dark": 2},
    "problem_type": "multi_label_classification",
}


def _stand_ins(tests_dir: Path) -> dict[str, types.ModuleType]:
    exporters_test_export = _module(f"{PACKAGE}.exporters.test_export", ExportTesterMixin=ExportTesterMixin)
    generation_test_utils = _module(f"{PACKAGE}.generation.test_utils", GenerationTesterMixin=GenerationTesterMixin)
    utils_test_configuration_utils = _module(
        f"{PACKAGE}.utils.test_configuration_utils", config_common_kwargs=config_common_kwargs
    )
    return {
        PACKAGE: _module(PACKAGE, tests_dir),
        f"{PACKAGE}.exporters": _module(f"{PACKAGE}.exporters", test_export=exporters_test_export),
        f"{PACKAGE}.exporters.test_export": exporters_test_export,
        f"{PACKAGE}.generation": _module(f"{PACKAGE}.generation", test_utils=generation_test_utils),
        f"{PACKAGE}.generation.test_utils": generation_test_utils,
        f"{PACKAGE}.utils": _module(f"{PACKAGE}.utils", test_configuration_utils=utils_test_configuration_utils),
        f"{PACKAGE}.utils.test_configuration_utils": utils_test_configuration_utils,
    }


@functools.lru_cache(maxsize=None)
def load_common_tests() -> tuple[types.ModuleType, types.ModuleType]:
    """``(test_modeling_common, test_configuration_common)`` of the installed transformers' sdist.

    Downloads the sdist on first use (a failure raises: the tests need these files). The files mark some tests with
    transformers' own CI markers (``flash_attn_test``, ...), unknown to this project's pytest; those warnings are
    silenced while the files load.
    """
    tests_dir = _transformers_tests_dir()
    with _scoped_modules(_stand_ins(tests_dir), scope=(PACKAGE,)), warnings.catch_warnings():
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
        configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    return modeling, configuration
