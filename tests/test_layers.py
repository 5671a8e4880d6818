"""The house's map: dependencies point one way, there is no import cycle, the remote code is self-contained.

Every import is counted, at module level and inside functions alike (a function-level import is an arrow too).
"""

import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REMOTE_CODE = {"configuration_m2mv", "modeling_m2mv", "feature_extraction_m2mv", "mv_format_m2mv", "processing_m2mv"}

# group -> the groups it may import (itself included). Bottom to top; README's "Layout" draws the same map.
ALLOWED = {
    "remote code": {"remote code"},
    "data": {"remote code", "data"},
    "pipeline": {"remote code", "data", "pipeline"},
    "dataset builders": {"remote code", "data", "pipeline", "dataset builders"},
    "checkpoints": {"remote code", "data", "checkpoints"},
    "inference": {"remote code", "data", "pipeline", "checkpoints", "inference"},
    "training": {"remote code", "data", "checkpoints", "training"},
    "evaluation": {"remote code", "data", "checkpoints", "inference", "evaluation"},
    "demo": {"remote code", "data", "pipeline", "dataset builders", "checkpoints", "inference", "training",
             "evaluation", "demo"},
    "app": {"remote code", "data", "pipeline", "checkpoints", "inference", "app"},
    "cli": set(),  # everything below it; nothing imports it
}
ALLOWED["cli"] = set(ALLOWED) - {"cli"} | {"cli"}
# What the remote code may import besides itself: it must load from any checkpoint folder.
REMOTE_CODE_THIRD_PARTY = {"torch", "numpy", "transformers", "huggingface_hub", "soundfile"}


def group(module: str) -> str | None:
    if module in REMOTE_CODE:
        return "remote code"
    if module.startswith("dataset_scripts"):
        return "dataset builders"
    if module in ("m2mv", "m2mv.errors", "m2mv.beats", "m2mv.configs") or module.startswith("m2mv.data"):
        return "data"
    for name in ("pipeline", "checkpoints", "inference", "training", "evaluation", "demo", "app", "cli"):
        if module == f"m2mv.{name}" or module.startswith(f"m2mv.{name}."):
            return name
    if module == "m2mv.__main__":
        return "cli"
    if module == "m2mv.demo_videos":
        return "demo"
    return None


def modules() -> dict[str, Path]:
    found = {path.stem: path for path in REPO.glob("*_m2mv.py")}
    for package in ("m2mv", "dataset_scripts"):
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports, absolute and relative, at any depth of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: the remote code's "from .configuration_m2mv import" or a package's
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if base and node.module else (node.module or base)
            else:
                name = node.module
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)  # "from m2mv import training"
    return found


def internal_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {}
    for module, path in known.items():
        graph[module] = {name for name in imports(path, module) if name in known and name != module}
    return graph


def test_every_module_has_a_layer():
    assert all(group(module) is not None for module in modules()), [m for m in modules() if group(m) is None]


def test_dependencies_point_one_way():
    wrong = [f"{module} ({group(module)}) imports {target} ({group(target)})"
             for module, targets in internal_graph().items() for target in sorted(targets)
             if group(target) not in ALLOWED[group(module)]]
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_cli():
    importers = [module for module, targets in internal_graph().items()
                 if group(module) != "cli" and any(group(t) == "cli" for t in targets)]
    assert not importers


def test_no_import_cycle():
    graph = internal_graph()
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    cycles = []

    def visit(module, stack):
        state[module] = 1
        for target in sorted(graph[module]):
            if state[target] == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif state[target] == 0:
                visit(target, stack + [target])
        state[module] = 2

    for module in sorted(graph):
        if state[module] == 0:
            visit(module, [module])
    assert not cycles, cycles


def test_the_remote_code_imports_only_itself_and_its_few_packages():
    stdlib = set(sys.stdlib_module_names)
    for module in REMOTE_CODE:
        for name in imports(REPO / f"{module}.py", module):
            top = name.split(".")[0]
            assert top in REMOTE_CODE | REMOTE_CODE_THIRD_PARTY | stdlib or not top, f"{module} imports {name}"
