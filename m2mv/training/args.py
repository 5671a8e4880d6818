"""The m2mv options of a training stage, its YAML config, and every check that needs nothing loaded.

The rest of a stage's options are TRL's (``SFTConfig``: optimiser, schedule, batch, precision, checkpoints, Hub;
``ModelConfig``: dtype, LoRA). A config is a YAML file, or the name of one shipped in ``m2mv/configs/``
(``stage1``, ``stage2``, ``demo/stage1``, ``tiny/stage2``...; ``m2mv configs`` lists them).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from transformers.trainer_utils import HubStrategy
from trl import ModelConfig, SFTConfig, TrlParser

from m2mv.checkpoints.loading import DEMO, resolve_checkpoint
from m2mv.data.schema import CAPTIONING, COLUMNS, MV_DESCRIPTION
from m2mv.errors import CheckpointError, TrainingError

logger = logging.getLogger("m2mv.training")

STAGE_RECORD = "m2mv_training.json"  # written into every training output; stage 2 requires stage 1's
STAGING_FOLDER = ".m2mv-staging"  # checkpoints and the final model are written here, then renamed into place
ADAPTER_FOLDER = "adapter"  # stage 2: the PEFT adapter (LoRA + adaptor) beside the merged weights
STAGE_DATASET_CONFIG = {1: CAPTIONING, 2: MV_DESCRIPTION}


@dataclass
class M2MVScriptArguments:
    """m2mv options of a training stage. Model and LoRA options are TRL's ``ModelConfig``; the optimiser, schedule,
    batch, precision, checkpointing and Hub options are TRL's ``SFTConfig`` (``max_length`` included)."""

    stage: int = field(default=1, metadata={"help": "1: adaptor only, on `captioning`; 2: adaptor + LoRA, on "
                                            "`mv_description`, starting from stage 1's output."})
    dataset_path: str | None = field(default=None, metadata={
        "help": "Dataset root (holding <config>/<split>-*.parquet, as dataset_scripts writes it) or one config's "
                "folder."})
    dataset_config: str | None = field(default=None, metadata={
        "help": "`captioning` or `mv_description`; default: captioning for stage 1, mv_description for stage 2."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default="validation", metadata={
        "help": "Held-out split for the eval loss (empty or null: no evaluation)."})
    audio_embeds: str = field(default="auto", metadata={
        "help": "Precomputed encoder embeddings: `auto` (<dataset root>/embeddings/<encoder hash>.parquet, as "
                "`m2mv embed` writes them, when any exist), `off` (always encode the audio), or an embeddings file "
                "or folder. Stale ones are an error."})
    use_genre_tags: bool = field(default=True, metadata={"help": "Put the genre tags into the prompt (stage 2)."})
    use_mv_type: bool = field(default=True, metadata={"help": "Put the MV type into the prompt (stage 2)."})
    use_lyrics_understanding: bool = field(default=True, metadata={
        "help": "Put the lyrics understanding into the prompt (stage 2)."})
    prompt_frames: bool = field(default=True, metadata={
        "help": "Stage 2: when a target's frames (its `frames` column) are not the fixed 2-s grid (e.g. "
                "beat-aligned), list them in the prompt (`Frames: [00:00-00:01.87], ...` with the given-frames "
                "instruction), as `m2mv describe --align beats` prompts; fixed-grid targets keep the plain prompt."})
    conditioning_dropout: float = field(default=0.0, metadata={
        "help": "Stage 2: leave each conditioning field (genre tags, MV type, lyrics understanding) out of a "
                "training prompt with this probability, independently, so that prompts with fewer inputs (the "
                "benchmark's ablation rows, music only) are in the training distribution; held-out prompts keep "
                "all of them."})
    zero_audio: bool = field(default=False, metadata={
        "help": "Ablation: replace every input's audio features by zeros (the audio then carries no information)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N held-out rows."})
    card_base_model: str | None = field(default=None, metadata={
        "help": "Hub id of the base model for the model card (default: the input folder's recorded base model)."})
    card_dataset: str | None = field(default=None, metadata={
        "help": "Hub id or name of the dataset for the model card (default: the dataset folder's name)."})
    card_license: str | None = field(default=None, metadata={
        "help": "License for the model card (default: the input checkpoint card's license)."})
    save_adapter: bool = field(default=True, metadata={
        "help": "Stage 2: also save the PEFT adapter (LoRA + adaptor) in <output_dir>/adapter."})


DATACLASSES = (M2MVScriptArguments, SFTConfig, ModelConfig)


def configs_dir() -> Path:
    """The folder of the configs shipped in the package (stage YAMLs, Accelerate configs)."""
    return Path(str(resources.files("m2mv.configs")))


def resolve_config(name_or_path: str) -> Path:
    """A config file: a path, or a packaged name (``stage1``, ``demo/stage2``, ``accelerate/fsdp``; ``.yaml``
    optional)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = configs_dir() / (name_or_path if name_or_path.endswith(".yaml") else f"{name_or_path}.yaml")
    if packaged.is_file():
        return packaged
    known = sorted(str(p.relative_to(configs_dir()).with_suffix("")) for p in configs_dir().rglob("*.yaml"))
    raise TrainingError(f"--config {name_or_path}: no such file, and no packaged config of that name (packaged: "
                        f"{', '.join(known)})")


def make_parser(subparsers=None, prog: str | None = None) -> TrlParser:
    """The stage's parser (TRL's ``TrlParser`` over the three dataclasses), standalone or as a subcommand."""
    if subparsers is not None:
        return subparsers.add_parser("train", help="train one stage (TRL SFTTrainer)", dataclass_types=DATACLASSES)
    return TrlParser(DATACLASSES, prog=prog)


def _check_config_keys(parser: TrlParser, path: Path) -> None:
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise TrainingError(f"{path}: a training config must be a YAML mapping of option: value")
    known = {action.dest for action in parser._actions} | {"env"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise TrainingError(
            f"{path}: unknown config key(s) {', '.join(map(repr, unknown))}; a key must be an option of "
            "M2MVScriptArguments (m2mv/training/args.py), trl.SFTConfig or trl.ModelConfig (m2mv train --help lists "
            "them)")


def resolve_config_argument(argv: Sequence[str], parser: TrlParser) -> list[str]:
    """``argv`` with its ``--config NAME|PATH`` value made a file path, the file's keys checked."""
    argv = list(argv)
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        where = argv.index("--config") + 1
        path = resolve_config(argv[where])
        _check_config_keys(parser, path)
        argv[where] = str(path)
    return argv


def parse_args(argv: Sequence[str] | None = None, parser: TrlParser | None = None):
    """``(script_args, training_args, model_args)`` from ``--config NAME|PATH`` plus command-line overrides.

    A key the YAML or the command line names that no dataclass has is an error naming it.
    """
    parser = parser or make_parser()
    argv = resolve_config_argument(sys.argv[1:] if argv is None else argv, parser)
    try:
        return parser.parse_args_and_config(argv)
    except ValueError as err:  # HfArgumentParser: "Some specified arguments are not used ..."
        raise TrainingError(f"unknown or malformed option: {err}") from err


def read_record(folder: Path) -> dict | None:
    """The training record of a stage's output folder, or None for a checkpoint no stage wrote."""
    path = folder / STAGE_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TrainingError(f"{path}: unreadable training record ({err})") from err


def resolve_model_path(model_name_or_path: str | None) -> Path:
    """The checkpoint folder: a path, or ``demo`` for the cached SmolLM2 demo checkpoint (built once)."""
    if not model_name_or_path:
        raise TrainingError("model_name_or_path is required: an m2mv checkpoint folder (m2mv-convert's output) "
                            f"for stage 1, stage 1's output folder for stage 2, or `{DEMO}`")
    try:
        return resolve_checkpoint(model_name_or_path)
    except CheckpointError as err:
        raise TrainingError(f"model_name_or_path {model_name_or_path}: not an m2mv checkpoint folder ({err})") from err


def checkpoints_in(folder: Path) -> list[Path]:
    """``checkpoint-N`` folders of ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resolve_resume(training_args) -> str | None:
    """``--resume_from_checkpoint``: ``last``/``true`` -> the newest complete checkpoint of ``output_dir``; or a
    checkpoint path."""
    value = training_args.resume_from_checkpoint
    if value in (None, "", False) or str(value).lower() in ("false", "no", "none"):
        return None
    if str(value).lower() in ("true", "last", "latest", "yes"):
        found = checkpoints_in(Path(training_args.output_dir))
        if not found:
            raise TrainingError(f"--resume_from_checkpoint {value}: {training_args.output_dir} holds no checkpoint")
        return str(found[-1])
    path = Path(value)
    if not (path / "trainer_state.json").is_file():
        raise TrainingError(f"--resume_from_checkpoint {path}: not a complete checkpoint (no trainer_state.json)")
    return str(path)


def dataset_config(script_args: M2MVScriptArguments) -> str:
    """The dataset config a stage trains on."""
    return script_args.dataset_config or STAGE_DATASET_CONFIG[script_args.stage]


def _check_stage(script_args: M2MVScriptArguments, model_args, model_path: Path) -> None:
    if script_args.stage not in (1, 2):
        raise TrainingError(f"stage must be 1 or 2, got {script_args.stage}")
    record = read_record(model_path)
    if script_args.stage == 1 and model_args.use_peft:
        raise TrainingError("stage 1 trains only the adaptor: set use_peft: false (LoRA is stage 2)")
    if script_args.stage == 2 and (record is None or record.get("stage") != 1):
        found = f"no {STAGE_RECORD}" if record is None else f"a stage-{record.get('stage')} output"
        raise TrainingError(
            f"stage 2 starts from stage 1's output folder, and {model_path} is not one ({found}): run stage 1 first "
            f"(m2mv train --config stage1 ...) and pass its output_dir as model_name_or_path")
    if model_args.use_peft and (model_args.use_dora or model_args.lora_target_parameters):
        raise TrainingError("only plain LoRA on modules is supported (use_dora / lora_target_parameters are not)")


def _check_data(script_args: M2MVScriptArguments, training_args) -> None:
    if dataset_config(script_args) not in COLUMNS:
        raise TrainingError(f"dataset_config {dataset_config(script_args)!r} is unknown; known: {', '.join(COLUMNS)}")
    if not script_args.dataset_path:
        raise TrainingError("dataset_path is required (the dataset folder that dataset_scripts writes)")
    if not Path(script_args.dataset_path).is_dir():
        raise TrainingError(f"dataset_path {script_args.dataset_path}: no such folder")
    if script_args.audio_embeds not in ("auto", "off") and not Path(script_args.audio_embeds).exists():
        raise TrainingError(f"audio_embeds {script_args.audio_embeds}: no such file or folder "
                            "(use `auto`, `off` or the path of precomputed embeddings)")
    if (script_args.max_train_samples or 1) < 1 or (script_args.max_eval_samples or 1) < 1:
        raise TrainingError("max_train_samples / max_eval_samples must be >= 1")
    if training_args.max_length is not None and training_args.max_length < 8:
        raise TrainingError(f"max_length {training_args.max_length} is too small for a prompt")
    if not 0.0 <= script_args.conditioning_dropout < 1.0:
        raise TrainingError(f"conditioning_dropout {script_args.conditioning_dropout} must be in [0, 1)")
    if training_args.packing:
        raise TrainingError("packing: m2mv's collator builds each batch from whole dataset rows (audio + prompt + "
                            "answer), which TRL's packing would cut apart; use --padding_free true, which "
                            "concatenates a batch's rows without padding")


def _check_output(training_args) -> None:
    out = Path(training_args.output_dir)
    resume = resolve_resume(training_args)
    if (out / "config.json").is_file():
        raise TrainingError(f"output_dir {out} already holds a trained model; choose a new output_dir")
    if resume is None and checkpoints_in(out):
        names = ", ".join(p.name for p in checkpoints_in(out))
        raise TrainingError(f"output_dir {out} already holds checkpoints ({names}): resume with "
                            "--resume_from_checkpoint last, or choose an empty output_dir")


def check_args(script_args: M2MVScriptArguments, training_args, model_args) -> Path:
    """Every check that needs no model or data loaded; returns the input checkpoint's folder. Raises
    :class:`~m2mv.errors.TrainingError`."""
    model_path = resolve_model_path(model_args.model_name_or_path)
    _check_stage(script_args, model_args, model_path)
    _check_data(script_args, training_args)
    _check_output(training_args)
    return model_path


def prepare_training_args(training_args) -> bool:
    """What the collator needs from ``SFTConfig`` (keep the raw columns, skip TRL's own tokenisation), and
    ``--push_to_hub`` pushing only the finished, merged model (``hub_strategy: end``): the trainer's other
    strategies copy checkpoint files (a bare adapter in stage 2) over the output folder while training.

    Returns ``--padding_free``, which m2mv's collator does (TRL's flag is cleared: TRL refuses it with a collator
    of one's own, and its own padding-free collator cannot carry the audio)."""
    padding_free, training_args.padding_free = bool(training_args.padding_free), False
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    if training_args.push_to_hub and str(getattr(training_args.hub_strategy, "value", training_args.hub_strategy)) \
            != "end":
        logger.warning("push_to_hub: pushing the Hub-ready model at the end of training only (hub_strategy: end)")
        training_args.hub_strategy = HubStrategy.END
    return padding_free
