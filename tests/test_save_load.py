"""Checkpoints: safetensors + remote code + auto_map, loaded by the Auto classes in a fresh process."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from safetensors.torch import load_file, save_file

from m2mv.data.taxonomy import load_mv_types

FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.append(sys.argv[2])  # site-packages only: no .pth hooks, so no editable install of this repo
    import numpy as np
    for name in ("configuration_m2mv", "modeling_m2mv", "feature_extraction_m2mv", "mv_format_m2mv",
                 "processing_m2mv"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} is importable outside the checkpoint: the test would prove nothing")
    from transformers import (AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForCausalLM,
                              AutoModelForMultimodalLM, AutoProcessor)
    folder = sys.argv[1]
    kinds = {}
    kinds["config"] = type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__
    for auto in (AutoModel, AutoModelForCausalLM, AutoModelForMultimodalLM):
        kinds[auto.__name__] = type(auto.from_pretrained(folder, trust_remote_code=True)).__name__
    kinds["feature_extractor"] = type(AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)).__name__
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    kinds["processor"] = type(processor).__name__
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    wave = np.sin(np.arange(48000) / 16000 * 2 * np.pi * 440).astype(np.float32)
    inputs = processor(text=[processor.build_prompt(mv_type="Animation")], audio=[wave], sampling_rate=16000)
    out = model.generate(**inputs, do_sample=False, max_new_tokens=5)
    kinds["new_tokens"] = int(out.shape[1] - inputs["input_ids"].shape[1])
    kinds["module"] = type(model).__module__
    print(json.dumps(kinds))
    """
)


def _run_fresh(folder, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS_SCRIPT)
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"),
           "HOME": str(tmp_path)}
    # -I: isolated (no PYTHONPATH, no cwd on sys.path); -S: no site hooks (the editable install of this repo);
    # run from an unrelated folder, so the m2mv files can only come from the checkpoint folder.
    site_packages = next(p for p in sys.path if p.endswith("site-packages") and "transformers" in os.listdir(p))
    result = subprocess.run([sys.executable, "-I", "-S", str(script), str(folder), site_packages], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_checkpoint_folder_layout(tiny_checkpoint):
    files = {p.name for p in tiny_checkpoint.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "processor_config.json",
            "configuration_m2mv.py", "modeling_m2mv.py", "feature_extraction_m2mv.py", "mv_format_m2mv.py",
            "processing_m2mv.py", "README.md"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_m2mv.M2MVForConditionalGeneration"
    assert config["auto_map"]["AutoConfig"] == "configuration_m2mv.M2MVConfig"
    processor_config = json.loads((tiny_checkpoint / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_m2mv.M2MVProcessor"
    assert processor_config["mv_types"] == load_mv_types() and len(load_mv_types()) == 10
    generation = json.loads((tiny_checkpoint / "generation_config.json").read_text())
    assert (generation["temperature"], generation["top_p"], generation["max_new_tokens"]) == (0.1, 1.0, 512)
    card = (tiny_checkpoint / "README.md").read_text()
    assert "# m2mv-tiny-random" in card and "Random weights" in card


def test_auto_classes_load_in_a_fresh_process_from_a_folder_off_sys_path(tiny_checkpoint, tmp_path):
    folder = tmp_path / "somewhere" / "my-m2mv"
    shutil.copytree(tiny_checkpoint, folder)
    kinds = _run_fresh(folder, tmp_path)
    assert kinds["config"] == "M2MVConfig"
    assert kinds["AutoModel"] == kinds["AutoModelForCausalLM"] == kinds["AutoModelForMultimodalLM"]
    assert kinds["AutoModel"] == "M2MVForConditionalGeneration"
    assert kinds["feature_extractor"] == "M2MVFeatureExtractor" and kinds["processor"] == "M2MVProcessor"
    assert kinds["module"].startswith("transformers_modules.")
    assert kinds["new_tokens"] >= 1


def test_stop_token_is_in_the_generation_config(tiny):
    model, processor = tiny
    stop = processor.tokenizer("\n###", add_special_tokens=False)["input_ids"][-1]
    assert stop in model.generation_config.eos_token_id


def test_save_pretrained_round_trip(tiny, tmp_path):
    from transformers import AutoModel

    model, _ = tiny
    model.save_pretrained(tmp_path / "again")
    again = AutoModel.from_pretrained(tmp_path / "again", trust_remote_code=True)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert a.equal(b), name


def _tamper(tiny_checkpoint, tmp_path, change):
    folder = tmp_path / "tampered"
    shutil.copytree(tiny_checkpoint, folder)
    weights = load_file(folder / "model.safetensors")
    change(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda w: w.pop("model.audio_tower.layers.0.self_attn.key_bias_token"), "missing keys"),
        (lambda w: w.__setitem__("model.audio_tower.extra.weight", w["lm_head.weight"][:1].clone()), "unexpected"),
    ],
)
def test_checkpoint_with_missing_or_unexpected_keys_is_refused(tiny_checkpoint, tmp_path, change, message):
    from transformers import AutoModel

    folder = _tamper(tiny_checkpoint, tmp_path, change)
    with pytest.raises(ValueError, match=message) as err:
        AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert str(folder) in str(err.value)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True, strict=False)  # explicit opt-out
    assert model is not None


def test_checkpoint_with_misshaped_key_is_refused(tiny_checkpoint, tmp_path):
    from transformers import AutoModel

    folder = _tamper(tiny_checkpoint, tmp_path,
                     lambda w: w.__setitem__("model.multi_modal_projector.linear.bias", w["model.multi_modal_projector.linear.bias"][:5].clone()))
    with pytest.raises(Exception, match="(?i)size|shape|mismatch"):
        AutoModel.from_pretrained(folder, trust_remote_code=True)


def test_corrupt_weights_file_is_refused(tiny_checkpoint, tmp_path):
    from transformers import AutoModel

    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_checkpoint, folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception) as err:
        AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert "safetensors" in str(err.value).lower() or "model.safetensors" in str(err.value) or "incomplete" in str(err.value).lower()


def test_config_whose_sizes_disagree_is_refused(tiny_checkpoint, tmp_path):
    from transformers import AutoConfig

    folder = tmp_path / "badconfig"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["audio_config"]["num_attention_heads"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="divisible by num_attention_heads"):
        AutoConfig.from_pretrained(folder, trust_remote_code=True)
