"""transformers' own common tests (ModelTesterMixin, ConfigTester) run on m2mv's classes with tiny configs.

The two test files come from the installed transformers' sdist (see tests/transformers_reference.py). Overridden
here, each with its reason: the three gradient-checkpointing training tests (skipped),
test_sdpa_can_dispatch_non_composite_models (skipped) and test_model_weights_reload_no_missing_tied_weights (run
without strict loading, plus a check that strict loading refuses). The remaining skips are transformers' own: tests
that need an accelerator, flash-attn, kernels, deepspeed or MPS, or a feature m2mv does not have (MoE, sliding
window, weight conversions, fp32-kept modules, ...).
"""

import contextlib
import os
import tempfile
import unittest
from unittest.mock import patch

import torch
from safetensors.torch import save_file
from transformers import MODEL_MAPPING
from transformers.models.auto import modeling_auto

from configuration_m2mv import M2MVAudioConfig, M2MVConfig
from modeling_m2mv import M2MVForConditionalGeneration, M2MVModel, M2MVPreTrainedModel
from transformers_reference import GenerationTesterMixin, load_common_tests

common, configuration_common = load_common_tests()  # fetches transformers' sdist on first use; fails if it cannot
ModelTesterMixin, ConfigTester = common.ModelTesterMixin, configuration_common.ConfigTester
floats_tensor, ids_tensor, torch_device = common.floats_tensor, common.ids_tensor, common.torch_device


class M2MVModelTester:
    """Tiny m2mv configs and inputs: a 2-layer ImageBind audio branch on 26 x 36 spectrograms (2 x 3 overlapping
    16 x 16 patches, stride 10, as ImageBind patches its 128 x 204 ones), 3 clips per input, one LM token per clip,
    and a 2-layer Llama."""

    def __init__(
        self,
        parent,
        batch_size=3,
        text_seq_length=7,
        audio_token_id=0,
        is_training=True,
        text_config=None,
        audio_config=None,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.audio_token_id = audio_token_id
        self.is_training = is_training
        self.text_config = text_config or {
            "model_type": "llama",
            "vocab_size": 99,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "initializer_range": 0.02,
            "pad_token_id": 1,
            "bos_token_id": 2,
            "eos_token_id": 3,
            "tie_word_embeddings": False,
        }
        self.audio_config = audio_config or {
            "num_mel_bins": 26,
            "target_length": 36,
            "patch_size": 16,
            "patch_stride": 10,
            "hidden_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "drop_path_rate": 0.1,
            "output_dim": 24,
            "clips_per_audio": 3,
            "initializer_range": 0.02,
        }
        self.num_audio_tokens = self.audio_config["clips_per_audio"]
        self.pad_token_id = self.text_config["pad_token_id"]
        self.vocab_size = self.text_config["vocab_size"]
        self.hidden_size = self.text_config["hidden_size"]
        self.num_hidden_layers = self.text_config["num_hidden_layers"]
        self.num_attention_heads = self.text_config["num_attention_heads"]
        self.seq_length = text_seq_length + self.num_audio_tokens
        self.encoder_seq_length = self.seq_length

    def get_config(self) -> M2MVConfig:
        return M2MVConfig(
            audio_config=self.audio_config,
            text_config=self.text_config,
            audio_token_id=self.audio_token_id,
            num_audio_tokens=self.num_audio_tokens,
        )

    def prepare_config_and_inputs(self):
        audio = self.audio_config
        input_features = floats_tensor(
            [self.batch_size, audio["clips_per_audio"], audio["num_mel_bins"], audio["target_length"]]
        )
        return self.get_config(), input_features

    def prepare_config_and_inputs_for_common(self):
        config, input_features = self.prepare_config_and_inputs()
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 2) + 2
        input_ids[:, : self.num_audio_tokens] = self.audio_token_id  # the processor's expanded placeholders
        attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=torch_device)
        inputs_dict = {"input_features": input_features, "input_ids": input_ids, "attention_mask": attention_mask}
        return config, inputs_dict


@contextlib.contextmanager
def _registered_in_transformers_mappings():
    """Register m2mv where ModelTesterMixin looks a model up, as an in-library model is registered.

    The mixin decides from transformers' name mappings which class is the base model (no loss: the training tests
    skip it; the base-model tests run on it) and which one is a causal LM (it gets ``labels``: the loss tests run on
    it). m2mv is remote code, so it is in none of them and those tests would pass without checking anything. The
    entries say what m2mv is: M2MVModel is the base model (``base_model_prefix``) and M2MVForConditionalGeneration is
    the causal LM (``AutoModelForCausalLM`` in the checkpoints' ``auto_map``). They are removed afterwards.
    """
    with (
        patch.dict(modeling_auto.MODEL_MAPPING_NAMES, {"m2mv": "M2MVModel"}),
        patch.dict(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, {"m2mv": "M2MVForConditionalGeneration"}),
        patch.dict(MODEL_MAPPING._extra_content, {M2MVConfig: M2MVModel}),
    ):
        yield


@contextlib.contextmanager
def _not_strict_by_default():
    """``from_pretrained`` with ``strict=False`` unless told otherwise (m2mv's default is ``strict=True``)."""
    from_pretrained = M2MVPreTrainedModel.from_pretrained.__func__

    def not_strict(cls, *args, strict: bool = False, **kwargs):
        return from_pretrained(cls, *args, strict=strict, **kwargs)

    with patch.object(M2MVPreTrainedModel, "from_pretrained", classmethod(not_strict)):
        yield


GRADIENT_CHECKPOINTING_SKIP = (
    "The test checks the first GradientCheckpointingLayer of the model, which is the first layer of m2mv's audio "
    "tower: that tower is frozen and kept in eval mode while training (config.freeze_audio_encoder), so it is never "
    "checkpointed. The language model's gradient checkpointing is tested in tests/test_modeling.py "
    "(test_gradient_checkpointing_gives_the_same_gradients)."
)


class M2MVModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (M2MVModel, M2MVForConditionalGeneration)
    _is_composite = True
    # m2mv's files carry no copyright year, which this test reads to skip models added before 2023: run it.
    test_can_init_all_missing_weights_before_2023 = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        registration = contextlib.ExitStack()
        registration.enter_context(_registered_in_transformers_mappings())
        cls.addClassCleanup(registration.close)

    def setUp(self):
        self.model_tester = M2MVModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=M2MVConfig, has_text_modality=False,
            common_properties=["audio_token_id", "num_audio_tokens"],
        )
        self.audio_config_tester = ConfigTester(
            self, config_class=M2MVAudioConfig, has_text_modality=False, **self.model_tester.audio_config
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_audio_config(self):
        self.audio_config_tester.run_common_tests()

    @unittest.skip(reason=GRADIENT_CHECKPOINTING_SKIP)
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip(reason=GRADIENT_CHECKPOINTING_SKIP)
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip(reason=GRADIENT_CHECKPOINTING_SKIP)
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass

    @unittest.skip(
        reason="m2mv is a composite model (audio tower + language model, _is_composite): its SDPA/eager dispatch "
        "is checked by test_sdpa_can_dispatch_composite_models"
    )
    def test_sdpa_can_dispatch_non_composite_models(self):
        pass

    def test_model_weights_reload_no_missing_tied_weights(self):
        """Overridden: the test loads a checkpoint holding none of the weights to see which ones are reported
        missing. m2mv refuses such a checkpoint by default (``strict=True``, checked here); the report itself is
        checked by transformers' test with ``strict=False``."""
        with _not_strict_by_default():
            super().test_model_weights_reload_no_missing_tied_weights()

        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            with tempfile.TemporaryDirectory() as tmp_dir:
                model_class(config).save_pretrained(tmp_dir)
                save_file({"tensor": torch.tensor([1, 2])}, os.path.join(tmp_dir, "model.safetensors"),
                          metadata={"format": "pt"})
                refused = r"missing keys: .*audio_tower\.embeddings.*unexpected keys: tensor"
                with self.assertRaisesRegex(ValueError, refused):
                    model_class.from_pretrained(tmp_dir)
