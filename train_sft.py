"""Train m2mv in two stages with TRL's SFTTrainer: one YAML per stage, any option overridable on the command line.

    # stage 1: only the adaptor trains, on the `captioning` config
    accelerate launch --config_file m2mv/configs/accelerate/single_process.yaml train_sft.py --config stage1 \\
        --model_name_or_path ./m2mv-vicuna-7b --dataset_path ./m2mv-dataset --output_dir outputs/stage1
    # stage 2: adaptor + LoRA (r=32, alpha=32 on q/k/v/o), on `mv_description`, from stage 1's output
    accelerate launch --config_file m2mv/configs/accelerate/single_process.yaml train_sft.py --config stage2 \\
        --model_name_or_path outputs/stage1 --dataset_path ./m2mv-dataset --output_dir outputs/stage2

The same as ``m2mv train`` (both run :func:`m2mv.training.sft.main`), as a script in TRL's style. ``--config``
takes a YAML path or the name of a config shipped in the package. Resume a killed run with
``--resume_from_checkpoint last``. See docs/training.md.
"""

import sys

from m2mv.errors import M2MVError
from m2mv.training.args import make_parser, parse_args
from m2mv.training.sft import main


def cli(argv=None) -> int:
    try:
        main(*parse_args(argv, make_parser(prog="train_sft.py")))
    except M2MVError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
