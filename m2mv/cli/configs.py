"""``m2mv configs``: the configs shipped in the package (stage YAMLs for ``--config``, Accelerate configs)."""

from __future__ import annotations

NAME = "configs"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="list the packaged training and Accelerate configs")
    parser.set_defaults(run=run)


def run(args, extra=()) -> int:
    from m2mv.training.args import configs_dir

    folder = configs_dir()
    print(f"# {folder}")
    for path in sorted(folder.rglob("*.yaml")):
        print(path.relative_to(folder).with_suffix(""))
    return 0
