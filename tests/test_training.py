"""Two-stage training (train_sft.py, m2mv/training.py): bad input refused before any step, the collator, freezing,
LoRA merged exactly into a folder that AutoModel loads in a fresh process, the model card, and learning.

Everything runs on tiny checkpoints and a synthetic toy dataset (m2mv.write_toy_dataset: tonal or noisy
notes at a slow or fast rate, named by the targets), one torch thread (2-core CI machines; see _one_thread).
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from m2mv.checkpoints.loading import remote_code_files
from m2mv.data.embeddings import AudioEmbedsTable, encoder_hash
from m2mv.data.loading import load_split
from m2mv.data.schema import CAPTIONING, MV_DESCRIPTION
from m2mv.errors import StaleEmbeddingsError, TrainingError
from m2mv.evaluation.answer_loss import answer_losses, format_answer_losses, summarize_answer_losses
from m2mv.training.args import parse_args
from m2mv.training.collator import M2MVDataCollator
from m2mv.training.data import precompute_audio_embeds
from m2mv.training.toy import build_text_pretrained_tiny_checkpoint, write_toy_dataset

REPO = Path(__file__).resolve().parents[1]
REMOTE_CODE_FILES = [path.name for path in remote_code_files()]
TINY1 = REPO / "m2mv" / "configs" / "tiny" / "stage1.yaml"
TINY2 = REPO / "m2mv" / "configs" / "tiny" / "stage2.yaml"


def load_train_sft():
    spec = importlib.util.spec_from_file_location("train_sft", REPO / "train_sft.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_sft = load_train_sft()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine two OpenMP threads per process
    run up to 30x slower (measured); one thread keeps these tests' time stable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(*argv):
    """train_sft.py in this process; returns the trainer."""
    return train_sft.main(*parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "data", n_train=32, n_eval=16)


@pytest.fixture(scope="module")
def plain_tiny(tmp_path_factory):
    """The converter's tiny random checkpoint (random LM, random encoder, random adaptor)."""
    from m2mv.checkpoints.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("plain") / "m2mv-tiny-random")


@pytest.fixture(scope="module")
def stage1_out(plain_tiny, toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("s1") / "stage1"
    trainer = run("--config", TINY1, "--model_name_or_path", plain_tiny, "--dataset_path", toy, "--output_dir", out,
                  "--max_steps", 4, "--audio_embeds", "off")
    return out, trainer


def state(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


# ----------------------------------------------------------------------------------------------------------------
# Bad input: each a clear error before any step (nothing written to the output folder)
# ----------------------------------------------------------------------------------------------------------------


def assert_nothing_trained(out: Path):
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_unknown_config_key_is_refused(plain_tiny, toy, tmp_path, capsys):
    config = yaml.safe_load(TINY1.read_text())
    config["learning_rat"] = 1e-4
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    args = ["--config", str(path), "--model_name_or_path", str(plain_tiny), "--dataset_path", str(toy),
            "--output_dir", str(out)]
    with pytest.raises(TrainingError, match="unknown config key.*'learning_rat'"):
        parse_args(args)
    assert train_sft.cli(args) == 2 and "learning_rat" in capsys.readouterr().err
    assert_nothing_trained(out)


def test_unknown_command_line_option_is_refused(plain_tiny, toy, tmp_path):
    with pytest.raises(TrainingError, match="no_such_option"):
        parse_args(["--config", str(TINY1), "--model_name_or_path", str(plain_tiny), "--no_such_option", "1"])


def test_missing_dataset_path_is_refused(plain_tiny, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(TrainingError, match="dataset_path .*nowhere: no such folder"):
        run("--config", TINY1, "--model_name_or_path", plain_tiny, "--dataset_path", tmp_path / "nowhere",
            "--output_dir", out)
    assert_nothing_trained(out)


def test_missing_split_is_refused(plain_tiny, toy, tmp_path):
    with pytest.raises(TrainingError, match="no Parquet files for split 'dev'"):
        run("--config", TINY1, "--model_name_or_path", plain_tiny, "--dataset_path", toy, "--output_dir",
            tmp_path / "out", "--eval_split", "dev")


def _copy_config_without(toy: Path, config: str, column: str, dest: Path) -> Path:
    from datasets import load_dataset

    for split in ("train", "validation"):
        ds = load_dataset("parquet", data_files=str(toy / config / f"{split}-00000-of-00001.parquet"), split="train")
        (dest / config).mkdir(parents=True, exist_ok=True)
        ds.remove_columns(column).to_parquet(str(dest / config / f"{split}-00000-of-00001.parquet"))
    return dest


def test_dataset_without_the_target_column_is_refused(plain_tiny, toy, tmp_path):
    data = _copy_config_without(toy, "captioning", "caption", tmp_path / "data")
    out = tmp_path / "out"
    with pytest.raises(TrainingError, match="missing column.*'caption': the training target"):
        run("--config", TINY1, "--model_name_or_path", plain_tiny, "--dataset_path", data, "--output_dir", out)
    assert_nothing_trained(out)


def test_stage2_dataset_without_a_conditioning_column_is_refused_unless_switched_off(stage1_out, toy, tmp_path):
    data = _copy_config_without(toy, "mv_description", "mv_type", tmp_path / "data")
    out = tmp_path / "out"
    with pytest.raises(TrainingError, match=r"'mv_type': conditioning \(use_mv_type: true\)"):
        run("--config", TINY2, "--model_name_or_path", stage1_out[0], "--dataset_path", data, "--output_dir", out)
    assert_nothing_trained(out)
    # the ablation switch makes the column unnecessary (this run trains 1 step)
    run("--config", TINY2, "--model_name_or_path", stage1_out[0], "--dataset_path", data, "--output_dir", out,
        "--use_mv_type", "false", "--max_steps", 1, "--audio_embeds", "off")
    assert (out / "config.json").is_file()


def test_captioning_data_given_to_stage2_is_refused(stage1_out, toy, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(TrainingError, match="missing column.*'description': the training target"):
        run("--config", TINY2, "--model_name_or_path", stage1_out[0], "--dataset_path", toy / "captioning",
            "--output_dir", out)
    assert_nothing_trained(out)


def test_stage2_without_a_stage1_checkpoint_is_refused(plain_tiny, toy, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(TrainingError, match="stage 2 starts from stage 1's output.*run stage 1 first"):
        run("--config", TINY2, "--model_name_or_path", plain_tiny, "--dataset_path", toy, "--output_dir", out)
    assert_nothing_trained(out)


def test_stage1_with_lora_is_refused(plain_tiny, toy, tmp_path):
    with pytest.raises(TrainingError, match="stage 1 trains only the adaptor"):
        run("--config", TINY1, "--model_name_or_path", plain_tiny, "--dataset_path", toy, "--output_dir",
            tmp_path / "out", "--use_peft", "true")


def test_missing_model_and_existing_output_are_refused(plain_tiny, toy, stage1_out, tmp_path):
    with pytest.raises(TrainingError, match="not an m2mv checkpoint folder"):
        run("--config", TINY1, "--model_name_or_path", tmp_path / "nope", "--dataset_path", toy, "--output_dir",
            tmp_path / "out")
    with pytest.raises(TrainingError, match="already holds a trained model"):
        run("--config", TINY1, "--model_name_or_path", plain_tiny, "--dataset_path", toy, "--output_dir",
            stage1_out[0])


def test_stale_embeddings_are_refused(plain_tiny, toy, tmp_path):
    import shutil

    from m2mv.checkpoints.tiny import build_tiny_checkpoint

    data = tmp_path / "data"
    shutil.copytree(toy, data)
    other = build_tiny_checkpoint(tmp_path / "other", seed=1)  # another (random) audio encoder
    stale = precompute_audio_embeds(other, data)  # data/embeddings/<other's hash>.parquet
    out = tmp_path / "out"
    with pytest.raises(StaleEmbeddingsError, match="embeddings in .* are stale"):
        run("--config", TINY1, "--model_name_or_path", plain_tiny, "--dataset_path", data, "--output_dir", out)
    assert_nothing_trained(out)
    with pytest.raises(StaleEmbeddingsError, match="are stale: they were made by audio encoder"):
        run("--config", TINY1, "--model_name_or_path", plain_tiny, "--dataset_path", data, "--output_dir", out,
            "--audio_embeds", stale)  # the file named explicitly: its rows' hash is checked
    assert_nothing_trained(out)


def test_embeddings_missing_songs_are_refused(plain_tiny, toy, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    data = tmp_path / "data"
    shutil.copytree(toy, data)
    path = precompute_audio_embeds(plain_tiny, data)
    pq.write_table(pq.read_table(path).slice(0, 5), path)
    with pytest.raises(StaleEmbeddingsError, match="have no precomputed embedding"):
        run("--config", TINY1, "--model_name_or_path", plain_tiny, "--dataset_path", data, "--output_dir",
            tmp_path / "out")


@pytest.mark.parametrize("dropout", [0, 0.9])  # the checks see every field, whatever training's prompts drop
def test_unknown_mv_type_in_the_data_is_refused_before_training(stage1_out, toy, tmp_path, dropout):
    from datasets import load_dataset

    data = tmp_path / "data"
    for split in ("train", "validation"):
        ds = load_dataset("parquet", data_files=str(toy / "mv_description" / f"{split}-00000-of-00001.parquet"),
                          split="train")
        ds = ds.map(lambda row, i: {"mv_type": "Puppet Show" if i == 3 else row["mv_type"]}, with_indices=True)
        (data / "mv_description").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(data / "mv_description" / f"{split}-00000-of-00001.parquet"))
    with pytest.raises(TrainingError, match="row 3 .*unknown MV type 'Puppet Show'"):
        run("--config", TINY2, "--model_name_or_path", stage1_out[0], "--dataset_path", data, "--output_dir",
            tmp_path / "out", "--conditioning_dropout", dropout)


# ----------------------------------------------------------------------------------------------------------------
# The collator
# ----------------------------------------------------------------------------------------------------------------


def test_collator_prompt_conditioning_switches_and_answer_only_labels(plain_tiny, toy):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(plain_tiny, trust_remote_code=True)
    ds = load_split(toy, "mv_description", "train")
    row = next(r for r in ds if r["lyrics_understanding"])
    full = M2MVDataCollator(processor, "mv_description", 256)
    prompt = full.prompt(row)
    assert f"Genre tags: {', '.join(row['genre_tags'])}." in prompt and f"MV type: {row['mv_type']}." in prompt
    assert "Lyrics understanding: " + row["lyrics_understanding"] in prompt
    bare = M2MVDataCollator(processor, "mv_description", 256, use_genre_tags=False, use_mv_type=False,
                                     use_lyrics_understanding=False)
    assert "Genre" not in bare.prompt(row) and "MV type" not in bare.prompt(row) and "Lyrics" not in bare.prompt(row)
    batch = full([row, ds[1]])
    assert batch["input_features"].shape == (2, 3, 128, 204)
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    answer = processor.tokenizer.decode(ids[labels != -100])
    assert answer.strip() == (row["description"] + "\n###").strip()
    assert (labels[: len(processor.tokenizer(prompt)["input_ids"])] == -100).all()
    short = M2MVDataCollator(processor, "mv_description", 120)([row])
    assert short["input_ids"].shape[1] == 120  # answer truncated to max_length, the prompt kept whole


def _with_description(row: dict, spans: list[tuple[float, float]]) -> dict:
    from m2mv.data.schema import description_fields

    frames = [(start, end, f"Shot {i} of the video.") for i, (start, end) in enumerate(spans)]
    return {**row, **description_fields("A video of light and motion.", frames)}


def target_frame_boundaries(description: str):
    """The frames a target's prompt lists: those of its ``frames`` column (here read from its text)."""
    from m2mv.data.schema import frames_of
    from m2mv.training.collator import prompt_frame_boundaries

    return prompt_frame_boundaries(frames_of(description))


def test_beat_aligned_targets_put_their_frames_into_the_prompt(plain_tiny, toy):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(plain_tiny, trust_remote_code=True)
    row = _with_description(load_split(toy, "mv_description", "train")[0],
                            [(0.0, 1.87), (1.87, 3.9), (3.9, 6.0)])
    collator = M2MVDataCollator(processor, "mv_description", 256)
    prompt = collator.prompt(row)
    assert (" Frames: [00:00-00:01.87], [00:01.87-00:03.90], [00:03.90-00:06]. "
            + processor.instructions["mv_description_given_frames"] + "\n### Assistant:") in prompt
    assert f"Genre tags: {', '.join(row['genre_tags'])}." in prompt  # the other conditioning stays
    off = M2MVDataCollator(processor, "mv_description", 256, prompt_frames=False).prompt(row)
    assert "Frames:" not in off and processor.instructions["mv_description"] in off
    batch = collator([row])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    prompt_tokens = len(processor.tokenizer(prompt)["input_ids"])
    assert (labels[:prompt_tokens] == -100).all() and (labels[prompt_tokens:] != -100).all()
    assert processor.tokenizer.decode(ids[labels != -100]).strip() == (row["description"] + "\n###").strip()


@pytest.mark.parametrize("spans", [[(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)], [(0.0, 2.0), (2.0, 2.5)],
                                   [(0.0, 2.004), (2.004, 4.0)]], ids=["6 s", "partial last frame", "within 10 ms"])
def test_fixed_grid_targets_keep_the_plain_prompt(plain_tiny, toy, spans):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(plain_tiny, trust_remote_code=True)
    row = _with_description(load_split(toy, "mv_description", "train")[0], spans)
    assert target_frame_boundaries(row["description"]) is None
    prompt = M2MVDataCollator(processor, "mv_description", 256).prompt(row)
    assert prompt == processor.build_prompt("mv_description", genre_tags=row["genre_tags"], mv_type=row["mv_type"],
                                            lyrics_understanding=row["lyrics_understanding"])
    assert "Frames:" not in prompt


def test_target_frame_boundaries():
    assert target_frame_boundaries("Overview: no frames here.") is None
    assert target_frame_boundaries(_with_description({}, [(0.0, 2.02), (2.02, 4.0)])["description"]) == \
        [(0.0, 2.02), (2.02, 4.0)]  # 20 ms off the grid: beyond the timestamps' precision
    assert target_frame_boundaries(_with_description({}, [(0.0, 2.0), (2.0, 4.0), (4.0, 7.0)])[
        "description"]) == [(0.0, 2.0), (2.0, 4.0), (4.0, 7.0)]  # a 3-s frame is not the grid


def test_precomputed_embeddings_give_the_same_loss_as_the_audio(plain_tiny, toy, tmp_path):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(plain_tiny, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(plain_tiny, trust_remote_code=True)
    import shutil

    data = tmp_path / "data"
    shutil.copytree(toy, data)
    table = AudioEmbedsTable(precompute_audio_embeds(plain_tiny, data))
    ds = load_split(toy, "captioning", "validation")
    table.validate(model, ds["song_id"])
    rows = [ds[i] for i in range(4)]
    with_audio = M2MVDataCollator(processor, "captioning", 128)(rows)
    with_embeds = M2MVDataCollator(processor, "captioning", 128, audio_embeds=table)(rows)
    assert "audio_embeds" in with_embeds and "input_features" not in with_embeds
    with torch.no_grad():
        a = model(**{k: torch.as_tensor(v) for k, v in with_audio.items()}).loss
        b = model(**{k: torch.as_tensor(v) for k, v in with_embeds.items()}).loss
    assert abs(float(a) - float(b)) < 1e-5


def test_encoder_hash_depends_on_the_encoder_only(plain_tiny):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(plain_tiny, trust_remote_code=True)
    before = encoder_hash(model)
    with torch.no_grad():
        model.multi_modal_projector.linear.weight.add_(1.0)
        model.language_model.norm.weight.add_(1.0)
    assert encoder_hash(model) == before
    assert encoder_hash(model.to(torch.bfloat16)) != before  # bf16 rounding changes the weights
    with torch.no_grad():
        model.float().audio_tower.head.projection.weight[0, 0] += 1e-3
    assert encoder_hash(model) != before


# ----------------------------------------------------------------------------------------------------------------
# Freezing, LoRA, merging, the output folder
# ----------------------------------------------------------------------------------------------------------------


def test_stage1_changes_only_the_adaptor(plain_tiny, stage1_out):
    out, trainer = stage1_out
    before, after = state(plain_tiny), state(out)
    assert before.keys() == after.keys()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["model.multi_modal_projector.linear.bias", "model.multi_modal_projector.linear.weight"]
    assert any(k.startswith("model.audio_tower.") for k in before)  # the encoder was compared, bit for bit
    assert sum(p.requires_grad for p in trainer.model.parameters()) == 2


def test_lora_targets_only_the_language_model(stage1_out):
    from transformers import AutoModel

    from m2mv.training.args import M2MVScriptArguments
    from m2mv.training.lora import set_trainable
    from trl import ModelConfig

    model = AutoModel.from_pretrained(stage1_out[0], trust_remote_code=True)
    peft_model = set_trainable(model, M2MVScriptArguments(stage=2), ModelConfig(use_peft=True, lora_r=32,
                                                                                lora_alpha=32))
    lora = [n for n, _ in peft_model.named_modules() if n.endswith("lora_A")]
    assert lora and all(".language_model.layers." in n for n in lora)
    assert {n.split(".")[-2] for n in lora} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert len(lora) == 4 * model.config.text_config.num_hidden_layers
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or ".multi_modal_projector.modules_to_save." in n for n in trainable)


@pytest.fixture(scope="module")
def stage2_out(stage1_out, toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("s2") / "stage2"
    source = state(stage1_out[0])
    trainer = run("--config", TINY2, "--model_name_or_path", stage1_out[0], "--dataset_path", toy, "--output_dir",
                  out, "--max_steps", 4, "--audio_embeds", "off", "--eval_strategy", "steps", "--eval_steps", 2,
                  "--max_eval_samples", 4)
    return out, trainer, source


def test_stage2_changes_only_adaptor_and_lora_and_merges_exactly(stage2_out):
    out, trainer, source = stage2_out
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    trained = {k.removeprefix("base_model.model."): v.detach() for k, v in peft_model.state_dict().items()}
    # the frozen weights under the adapter: bit-identical to stage 1's
    for key, value in trained.items():
        plain = key.replace(".base_layer.", ".").replace(".original_module.", ".")
        if "lora_" in key or ".modules_to_save." in key:
            continue
        assert torch.equal(value, source[plain]), key
    lora_b = [k for k in trained if k.endswith("lora_B.default.weight")]
    assert lora_b and all(trained[k].abs().sum() > 0 for k in lora_b)  # LoRA B starts at zero: it trained
    # the merged output: q/k/v/o = stage 1 + (alpha/r) B @ A, adaptor = the trained copy, everything else identical
    merged = state(out)
    assert merged.keys() == source.keys()
    scaling = 32 / 32
    for key in merged:
        module = key.removesuffix(".weight")
        if f"{module}.lora_A.default.weight" in trained:
            delta = scaling * trained[f"{module}.lora_B.default.weight"] @ trained[f"{module}.lora_A.default.weight"]
            torch.testing.assert_close(merged[key], source[key] + delta, rtol=0, atol=1e-6)
            assert not torch.equal(merged[key], source[key])
        elif ".multi_modal_projector." in key:
            copy = key.replace("multi_modal_projector.", "multi_modal_projector.modules_to_save.default.")
            assert torch.equal(merged[key], trained[copy]) and not torch.equal(merged[key], source[key])
        else:
            assert torch.equal(merged[key], source[key]), key
    # the adapter saved beside it holds exactly the LoRA and the adaptor
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert all("lora_" in k or "multi_modal_projector" in k for k in adapter) and len(adapter) == 2 * len(lora_b) + 2


def test_merged_output_equals_the_trained_adapter_model(stage2_out, toy):
    from transformers import AutoModel, AutoProcessor

    out, trainer, _ = stage2_out
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    merged = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    ds = load_split(toy, "mv_description", "validation")
    batch = M2MVDataCollator(processor, "mv_description", 256)([ds[i] for i in range(3)])
    batch = {k: torch.as_tensor(v) for k, v in batch.items()}
    peft_model = trainer.accelerator.unwrap_model(trainer.model).eval()
    with torch.no_grad():
        expected = peft_model(**batch).logits
        got = merged(**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)


FRESH = textwrap.dedent(
    """
    import json, sys
    sys.path.append(sys.argv[3])  # site-packages only: this repository's files are not importable
    for name in ("configuration_m2mv", "modeling_m2mv", "processing_m2mv", "m2mv"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} is importable: the test would prove nothing")
    import soundfile, io, torch
    from transformers import AutoModel, AutoProcessor
    folder, clip = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    prompt = processor.build_prompt(genre_tags=["rock"], mv_type="Animation")
    inputs = processor(text=[prompt], audio=[clip])
    out = model.generate(**inputs, do_sample=False, max_new_tokens=8)
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    print(json.dumps({"class": type(model).__name__, "module": type(model).__module__,
                      "new_tokens": int(out.shape[1] - inputs["input_ids"].shape[1]),
                      "logits": logits[:16].tolist()}))
    """
)


def test_output_folder_loads_and_generates_in_a_fresh_process(stage2_out, tmp_path):
    from transformers import AutoModel, AutoProcessor

    out = stage2_out[0]
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "processor_config.json", "README.md",
            "tokenizer.json", "chat_template.jinja", "m2mv_training.json", "adapter",
            *REMOTE_CODE_FILES} <= names
    assert not [n for n in names if n.startswith(".") or n.startswith("checkpoint-")]
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_m2mv.M2MVForConditionalGeneration"
    for name in REMOTE_CODE_FILES:
        assert (out / name).read_text() == (REPO / name).read_text()
    clip = str(REPO / "tests" / "data" / "openmsx-chemistry-lab-30s.ogg")
    script = tmp_path / "load.py"
    script.write_text(FRESH)
    site_packages = next(p for p in sys.path if p.endswith("site-packages") and "transformers" in os.listdir(p))
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-I", "-S", str(script), str(out), clip, site_packages], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = json.loads(result.stdout.strip().splitlines()[-1])
    assert fresh["class"] == "M2MVForConditionalGeneration" and fresh["module"].startswith("transformers_modules.")
    assert fresh["new_tokens"] >= 1
    model = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    inputs = processor(text=[processor.build_prompt(genre_tags=["rock"], mv_type="Animation")], audio=[clip])
    with torch.no_grad():
        here = model(**inputs).logits[0, -1, :16]
    np.testing.assert_allclose(fresh["logits"], here.numpy(), atol=1e-5)


def card_meta(folder):
    text = (Path(folder) / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def test_model_cards_state_base_data_config_losses_and_random_parts(stage1_out, stage2_out, toy):
    for out, stage in ((stage1_out[0], 1), (stage2_out[0], 2)):
        meta, text = card_meta(out)
        assert meta["library_name"] == "transformers" and meta["license"] == "other"
        assert meta["base_model"] == "m2mv-tiny-random" and meta["datasets"] == [toy.name]
        assert {"m2mv", "trl", "sft", f"m2mv-stage{stage}", "tiny-random", "random-weights"} <= set(meta["tags"])
        run_info = meta["m2mv_training"]
        assert run_info["stage"] == stage and run_info["config"]["seed"] == 12
        assert run_info["config"]["dataset_config"] == ("captioning" if stage == 1 else "mv_description")
        assert isinstance(run_info["results"]["final_train_loss"], float)
        assert "**Random weights:** language model, audio encoder." in text and "tiny random" in text
        record = json.loads((Path(out) / "m2mv_training.json").read_text())
        assert {k: v for k, v in record["results"].items() if not k.endswith("_curve")} == run_info["results"]
        assert record["stage"] == stage and record["results"]["train_curve"][0][0] == 1
    meta, _ = card_meta(stage2_out[0])
    lora = meta["m2mv_training"]["config"]["lora"]
    assert (lora["r"], lora["alpha"], lora["target_modules"]) == (32, 32, ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert "lora" in meta["tags"] and isinstance(meta["m2mv_training"]["results"]["final_eval_loss"], float)
    assert meta["m2mv_training"]["lineage"][0]["stage"] == 1


def test_activation_checkpointing_gives_the_same_step(stage1_out, toy, tmp_path):
    plain = run("--config", TINY2, "--model_name_or_path", stage1_out[0], "--dataset_path", toy, "--output_dir",
                tmp_path / "plain", "--max_steps", 2, "--audio_embeds", "off", "--eval_split", "", "--lora_dropout", 0)
    checkpointed = run("--config", TINY2, "--model_name_or_path", stage1_out[0], "--dataset_path", toy,
                       "--output_dir", tmp_path / "ckpt", "--max_steps", 2, "--audio_embeds", "off", "--eval_split", "",
                       "--lora_dropout", 0, "--activation_checkpointing", "true")
    assert checkpointed.args.activation_checkpointing
    assert checkpointed.model.get_base_model().model.language_model.gradient_checkpointing
    a = [e["loss"] for e in plain.state.log_history if "loss" in e]
    b = [e["loss"] for e in checkpointed.state.log_history if "loss" in e]
    assert len(a) == len(b) == 2 and max(abs(x - y) for x, y in zip(a, b)) < 1e-5


def test_padding_free_batch_gives_the_padded_batch_s_logits_and_loss(plain_tiny, toy):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(plain_tiny, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(plain_tiny, trust_remote_code=True)
    ds = load_split(toy, "mv_description", "train")
    rows = [ds[i] for i in range(3)]
    padded = M2MVDataCollator(processor, "mv_description", 256)(rows)
    packed = M2MVDataCollator(processor, "mv_description", 256, padding_free=True)(rows)
    lengths = padded["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) > 1  # rows of different lengths: the padded batch has padding to drop
    assert "attention_mask" not in packed and packed["input_ids"].shape == (1, int(lengths.sum()))
    starts = torch.cumsum(lengths, 0)[:-1]
    assert (packed["position_ids"][0, starts] == 0).all() and int(packed["position_ids"].max()) == lengths.max() - 1
    assert (packed["labels"][0, starts] == -100).all()
    assert torch.equal(packed["input_features"], padded["input_features"])  # one audio per row, in order
    with torch.no_grad():
        a = model(**padded)
        b = model(**packed)  # labels given: no cache, so the packing is seen and each row attends to itself only
    keep = padded["attention_mask"].bool()
    assert (a.logits[keep] - b.logits[0]).abs().max() < 1e-4
    assert abs(float(a.loss) - float(b.loss)) < 1e-5


def test_padding_free_training_takes_the_same_steps(stage1_out, toy, tmp_path):
    common = ["--config", TINY2, "--model_name_or_path", stage1_out[0], "--dataset_path", toy, "--max_steps", 2,
              "--audio_embeds", "off", "--eval_split", "", "--lora_dropout", 0]
    plain = run(*common, "--output_dir", tmp_path / "plain")
    packed = run(*common, "--output_dir", tmp_path / "packed", "--padding_free", "true")
    assert packed.data_collator.padding_free and not packed.args.padding_free  # m2mv's collator packs, not TRL's
    a = [e["loss"] for e in plain.state.log_history if "loss" in e]
    b = [e["loss"] for e in packed.state.log_history if "loss" in e]
    assert len(a) == len(b) == 2 and max(abs(x - y) for x, y in zip(a, b)) < 1e-5
    assert packed._total_train_tokens == plain._total_train_tokens  # the same real tokens, none of them padding
    record = json.loads((tmp_path / "packed" / "m2mv_training.json").read_text())
    assert record["config"]["padding_free"] is True


def test_conditioning_dropout_drops_fields_from_training_prompts_only(plain_tiny, toy):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(plain_tiny, trust_remote_code=True)
    row = next(r for r in load_split(toy, "mv_description", "train") if r["lyrics_understanding"])
    collator = M2MVDataCollator(processor, "mv_description", 256, conditioning_dropout=0.5)
    torch.manual_seed(0)
    given = [collator.conditioning(row) for _ in range(400)]
    fields = collator.for_eval().conditioning(row)
    kept = {name: sum(name in g for g in given) / len(given) for name in fields}
    assert set(kept) == {"genre_tags", "mv_type", "lyrics_understanding"}
    assert all(0.4 < share < 0.6 for share in kept.values()), kept  # each field kept about half the time
    assert 0.07 < sum(not g for g in given) / len(given) < 0.19  # music only about 1/8 of the time
    full = M2MVDataCollator(processor, "mv_description", 256)
    assert collator.for_eval() == full and collator.for_eval().prompt(row) == full.prompt(row)
    state = torch.get_rng_state()
    full.prompt(row)
    assert torch.equal(state, torch.get_rng_state())  # no dropout: nothing drawn, so no run changes by it


def test_conditioning_dropout_trains_on_fewer_fields_and_evaluates_on_all(stage1_out, toy, tmp_path):
    common = ["--config", TINY2, "--model_name_or_path", stage1_out[0], "--dataset_path", toy, "--max_steps", 2,
              "--audio_embeds", "off", "--eval_on_start", "true", "--eval_strategy", "no", "--lora_dropout", 0]
    plain = run(*common, "--output_dir", tmp_path / "plain")
    dropped = run(*common, "--output_dir", tmp_path / "dropped", "--conditioning_dropout", 0.5)
    initial = [[e["eval_loss"] for e in t.state.log_history if "eval_loss" in e][0] for t in (plain, dropped)]
    assert initial[0] == pytest.approx(initial[1], abs=1e-6)  # the held-out prompts keep every field
    a, b = ([e["loss"] for e in t.state.log_history if "loss" in e] for t in (plain, dropped))
    assert a[0] != pytest.approx(b[0], abs=1e-4)  # the training prompts do not
    record = json.loads((tmp_path / "dropped" / "m2mv_training.json").read_text())
    assert record["config"]["conditioning_dropout"] == 0.5
    with pytest.raises(TrainingError, match="conditioning_dropout 1.0 must be in"):
        run(*common, "--output_dir", tmp_path / "bad", "--conditioning_dropout", 1.0)
    assert_nothing_trained(tmp_path / "bad")


def test_packing_is_refused_and_fusion_is_not_packed(stage1_out, toy, tmp_path):
    from m2mv.training.collator import pack_rows

    with pytest.raises(TrainingError, match="packing.*--padding_free"):
        run("--config", TINY2, "--model_name_or_path", stage1_out[0], "--dataset_path", toy, "--output_dir",
            tmp_path / "out", "--packing", "true")
    assert_nothing_trained(tmp_path / "out")
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(TrainingError, match="pre-LLM fusion"):
        pack_rows({"input_ids": ids, "labels": ids, "attention_mask": ids, "fusion_mask": ids})


def test_padding_free_is_refused_for_a_fusion_model_before_any_row_is_read():
    from types import SimpleNamespace

    from m2mv.training.collator import make_collator

    fusion_model = SimpleNamespace(config=SimpleNamespace(prellm_fusion_layers=1))
    script_args = SimpleNamespace(use_genre_tags=True, use_mv_type=True, use_lyrics_understanding=True,
                                  prompt_frames=False, conditioning_dropout=0.0)
    with pytest.raises(TrainingError, match="pre-LLM fusion.*prellm_fusion_layers=1"):
        make_collator(fusion_model, None, script_args, SimpleNamespace(max_length=64), "mv_description",
                      datasets=[], padding_free=True)


def test_push_to_hub_uploads_the_merged_folder_with_the_card(stage1_out, toy, tmp_path, monkeypatch):
    """--push_to_hub goes through the trainer's own hub support; the Hub API is recorded offline."""
    import transformers.trainer

    calls = []

    class RecordingApi:
        def create_repo(self, repo_id, **kwargs):
            from huggingface_hub import RepoUrl

            calls.append(("create_repo", repo_id, kwargs.get("private")))
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, repo_id, folder_path, ignore_patterns=(), **kwargs):
            import fnmatch

            files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()
                           and not any(fnmatch.fnmatch(str(p.relative_to(folder_path)).split("/")[0], pattern)
                                       for pattern in ignore_patterns))
            calls.append(("upload_folder", repo_id, files, (Path(folder_path) / "README.md").read_text()))

    monkeypatch.setattr(transformers.trainer, "hf_api", RecordingApi)
    out = tmp_path / "pushed"
    run("--config", TINY2, "--model_name_or_path", stage1_out[0], "--dataset_path", toy, "--output_dir", out,
        "--max_steps", 2, "--audio_embeds", "off", "--eval_split", "", "--save_strategy", "steps", "--save_steps", 1,
        "--push_to_hub", "true", "--hub_model_id", "someone/m2mv-tiny-stage2", "--hub_token", "not-a-token")
    assert calls[0][:2] == ("create_repo", "someone/m2mv-tiny-stage2")
    uploads = [c for c in calls if c[0] == "upload_folder"]
    assert len(uploads) == 1  # the finished model only, not every checkpoint
    _, repo, files, card = uploads[0]
    assert {"model.safetensors", "config.json", "README.md", "m2mv_training.json", "adapter/adapter_model.safetensors",
            *REMOTE_CODE_FILES} <= set(files)
    assert not [f for f in files if f.startswith(("checkpoint-", "."))]
    assert "m2mv_training:" in card and "base_model: m2mv-tiny-random" in card


# ----------------------------------------------------------------------------------------------------------------
# Learning: each stage lowers the held-out loss; real audio beats zeroed audio features
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def learning_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("learn")
    data = write_toy_dataset(root / "data", n_train=64, n_eval=16, seed=0)
    checkpoint = build_text_pretrained_tiny_checkpoint(root / "m2mv-tiny-textlm", data, steps=120)
    precompute_audio_embeds(checkpoint, data)  # -> data/embeddings/<hash>.parquet (audio_embeds: auto)
    return root, data, checkpoint


def eval_losses(folder):
    results = json.loads((Path(folder) / "m2mv_training.json").read_text())["results"]
    return results["initial_eval_loss"], results["final_eval_loss"]


def two_stages_real_and_zeroed_audio(root, data, checkpoint, stage1_epochs, stage2_epochs, stage2_extra=()):
    """Stage 1 then stage 2 on the tiny configs, once with the audio and once with it zeroed: held-out losses."""
    figures = {}
    for audio in ("real", "zero"):
        flag = ["--zero_audio", "true"] if audio == "zero" else []
        s1, s2 = root / f"s1-{audio}", root / f"s2-{audio}"
        run("--config", TINY1, "--model_name_or_path", checkpoint, "--dataset_path", data, "--output_dir", s1,
            "--num_train_epochs", stage1_epochs, "--eval_strategy", "epoch", "--eval_on_start", "true", *flag)
        run("--config", TINY2, "--model_name_or_path", s1, "--dataset_path", data, "--output_dir", s2,
            "--num_train_epochs", stage2_epochs, "--eval_strategy", "epoch", "--eval_on_start", "true",
            *stage2_extra, *flag)
        figures[audio] = {"stage1": eval_losses(s1), "stage2": eval_losses(s2)}
    return figures


def held_out_answer_losses(checkpoint, data, config):
    """The validation split's answer losses with own / other / zeroed audio (summarize_answer_losses)."""
    from m2mv.checkpoints.loading import load_checkpoint

    model, processor = load_checkpoint(checkpoint)
    return summarize_answer_losses(answer_losses(model, processor, load_split(data, config, "validation"), config))


@pytest.mark.slow
def test_each_stage_lowers_held_out_loss_and_real_audio_beats_zeroed_audio(learning_setup):
    root, data, checkpoint = learning_setup
    figures = two_stages_real_and_zeroed_audio(root, data, checkpoint, stage1_epochs=15, stage2_epochs=6)
    print("held-out losses (before, after):", json.dumps(figures))
    for stage in ("stage1", "stage2"):
        before, after = figures["real"][stage]
        assert after < 0.9 * before, (stage, before, after)
    # the audio is used: the same runs with zeroed audio features end higher. Measured (seed 0, NExT-GPT's audio
    # scale, the default since 0.3): stage 1 0.062 vs 0.125, stage 2 0.024 vs 0.027 (only a few words of a
    # description depend on the audio); with Meta's x20 it was 0.062 vs 0.125 and 0.024 vs 0.028, and dataset seeds
    # 3 and 7 gave the same ordering (stage 2: 0.025 vs 0.029, 0.024 vs 0.030).
    assert figures["real"]["stage1"][1] < 0.9 * figures["zero"]["stage1"][1], figures
    assert figures["real"]["stage2"][1] < 0.95 * figures["zero"]["stage2"][1], figures
    # and it hears each clip, which a gap to zeroed audio alone does not show: held-out answers (music-only prompt)
    # score lower with their own audio than with another clip's (m2mv.evaluation.answer_loss; the demo fails this
    # check). Measured (seed 0): stage 1 own 0.0619, other 0.4170, zeroed 0.1425, own below other on 16 of 16;
    # stage 2 own 0.0696, other 0.1066, zeroed 0.0792, own below other on 15 of 16.
    for stage, config, ratio, rows in (("s1", CAPTIONING, 0.5, 14), ("s2", MV_DESCRIPTION, 0.8, 12)):
        summary = held_out_answer_losses(root / f"{stage}-real", data, config)
        print(stage, "answer losses:", format_answer_losses(summary))
        assert summary["mean_own"] < ratio * summary["mean_other"], summary
        assert summary["own_below_other"] >= rows, summary


@pytest.mark.slow
def test_each_stage_lowers_held_out_loss_on_the_demo_corpus(tmp_path):
    """The real demo corpus (real music, synthetic texts), a tiny model: both stages lower the held-out loss.

    Real vs zeroed audio is measured and printed, not asserted: with a random encoder and a few songs the audio
    does not help on held-out songs (docs/training.md, benchmarks/encoder_probe.py). The audio-use proofs are the
    toy data's, above, and on this corpus the real Whisper-base demo model's (tests/test_audio_use.py).
    """
    from dataset_scripts.demo_dataset import build_demo_data

    data, _ = build_demo_data(tmp_path)  # the demo's corpus (cached under ~/.cache/m2mv), dataset and split
    checkpoint = build_text_pretrained_tiny_checkpoint(tmp_path / "m2mv-tiny-textlm", data, steps=120)
    precompute_audio_embeds(checkpoint, data)
    figures = two_stages_real_and_zeroed_audio(tmp_path, data, checkpoint, stage1_epochs=10, stage2_epochs=4,
                                               stage2_extra=["--max_length", 1280])
    print("demo corpus, held-out losses (before, after):", json.dumps(figures))
    # Measured (NExT-GPT's audio scale): stage 1 0.662 -> 0.645 (the text-pretrained LM already knows the captions'
    # language; what is left depends on the music, which the random encoder barely carries), stage 2 0.544 -> 0.493.
    # Zeroed audio: stage 1 -> 0.646, stage 2 -> 0.493. (With Meta's x20: 0.663 -> 0.647, 0.546 -> 0.494.)
    assert figures["real"]["stage1"][1] < 0.99 * figures["real"]["stage1"][0], figures
    assert figures["real"]["stage2"][1] < 0.95 * figures["real"]["stage2"][0], figures
