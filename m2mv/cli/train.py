"""``m2mv train``: one training stage with TRL's SFTTrainer (the same as ``train_sft.py``; m2mv/training/sft.py).

    m2mv train --config stage1 --model_name_or_path CKPT --dataset_path DATA --output_dir outputs/stage1
    m2mv train --accelerate_config fsdp --config stage2 --model_name_or_path outputs/stage1 ...

``--config`` is a YAML path or the name of a config shipped in the package (``m2mv configs`` lists them); every
option of ``M2MVScriptArguments``, ``trl.SFTConfig`` and ``trl.ModelConfig`` can be given on the command line
(``m2mv train --help``). ``--accelerate_config NAME|PATH`` runs the stage under ``accelerate launch`` with that
Accelerate config (packaged: ``single_process``, ``multi_gpu_ddp``, ``fsdp``, ``deepspeed_zero2``).
"""

from __future__ import annotations

import subprocess
import sys

from m2mv.errors import UsageError

NAME = "train"
ACCELERATE_FLAG = "--accelerate_config"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="train one stage (TRL SFTTrainer); --help lists its options",
                                   add_help=False)
    parser.set_defaults(run=run, takes_extra=True)


def _without(argv: list[str], removed: list[str]) -> list[str]:
    """``argv`` with the ordered subsequence ``removed`` taken out."""
    rest, pending = [], list(removed)
    for token in argv:
        if pending and token == pending[0]:
            pending.pop(0)
        else:
            rest.append(token)
    return rest


def accelerate_command(argv: list[str]) -> list[str] | None:
    """``accelerate launch --config_file C [launch options] -m m2mv train [stage options]`` when
    ``--accelerate_config`` is given (else None). Options that no training dataclass knows (``--num_processes``,
    ``--main_process_port``...) go to ``accelerate launch``, as TRL's CLI does."""
    from m2mv.training.args import make_parser, resolve_config, resolve_config_argument

    if ACCELERATE_FLAG not in argv:
        return None
    where = argv.index(ACCELERATE_FLAG)
    if where + 1 >= len(argv):
        raise UsageError(f"{ACCELERATE_FLAG} needs a value: a packaged name (fsdp, ...) or a YAML path")
    name = argv[where + 1]
    config = resolve_config(name if "/" in name or name.endswith(".yaml") else f"accelerate/{name}")
    parser = make_parser()
    stage_argv = resolve_config_argument(argv[:where] + argv[where + 2:], parser)
    options = list(stage_argv)
    if "--config" in options:  # read by TrlParser itself, not one of the dataclasses' options
        del options[options.index("--config"): options.index("--config") + 2]
    _, launch_args = parser.parse_known_args(options)  # argparse only: the stage's config is checked where it runs
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), *launch_args,
            "-m", "m2mv", NAME, *_without(stage_argv, launch_args)]


def run(args, extra=()) -> int:
    from m2mv.training.args import make_parser, parse_args
    from m2mv.training.sft import main

    extra = list(extra)
    launch = accelerate_command(extra)
    if launch is not None:
        return subprocess.run(launch).returncode
    main(*parse_args(extra, make_parser(prog="m2mv train")))
    return 0
