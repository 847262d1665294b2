"""Checkpoint folders the project reads: the published BTLM layout (sharded bf16 safetensors,
config.json with auto_map), native StableLM, and the published alibi_scaling rules."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from model import BTLMConfig, BTLMLMHeadModel, CheckpointError, ModelConfigError
from model.checkpoint.folder import save_pretrained
from model.checkpoint.published import INDEX_NAME, WEIGHTS_NAME, to_published
from model.stablelm.layout import config_to_stablelm, state_to_stablelm
from tests.helpers.hf_support import relative_difference, tiny_model

PUBLISHED_CONFIG = {  # the fields of cerebras/btlm-3b-8k-base's config.json, at a tiny size
    "_name_or_path": "cerebras/btlm-3b-8k-base", "activation_function": "swiglu",
    "architectures": ["BTLMLMHeadModel"], "attn_pdrop": 0.0,
    "auto_map": {"AutoConfig": "cerebras/btlm-3b-8k-base--configuration_btlm.BTLMConfig",
                 "AutoModel": "cerebras/btlm-3b-8k-base--modeling_btlm.BTLMModel",
                 "AutoModelForCausalLM": "cerebras/btlm-3b-8k-base--modeling_btlm.BTLMLMHeadModel"},
    "bos_token_id": 50256, "embd_pdrop": 0.0, "eos_token_id": 50256, "initializer_range": 0.073,
    "layer_norm_epsilon": 1e-05, "model_type": "btlm", "mup_embeddings_scale": 14.6, "mup_output_alpha": 2.22,
    "mup_scale_qk_dot_by_d": True, "mup_width_scale": 0.5, "n_embd": 64, "n_head": 4, "n_inner": 96, "n_layer": 2,
    "n_positions": 256, "position_embedding_type": "alibi", "reorder_and_upcast_attn": False, "resid_pdrop": 0.0,
    "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.30.0", "use_cache": True, "vocab_size": 50257, "alibi_scaling": None,
}


def published_folder(tmp_path, model: BTLMLMHeadModel, config: dict) -> None:
    """Two bf16 shards + index, no slopes buffer, the published config.json."""
    tensors = {k: v.to(torch.bfloat16) for k, v in to_published(model.state_dict(), model.config).items()
               if k != "transformer.relative_pe.slopes"}
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / file), metadata={"format": "pt"})
    index = {"metadata": {"total_size": 0}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / INDEX_NAME).write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(json.dumps(config))


def test_loads_the_published_btlm_layout(tmp_path):
    model = tiny_model("alibi", mup_base_width=None, mup_width_scale=0.5)
    published_folder(tmp_path, model, PUBLISHED_CONFIG)
    loaded = BTLMLMHeadModel.from_pretrained(tmp_path)  # what init_from= calls
    assert loaded.config.mup_width_scale == 0.5 and loaded.config.tie_word_embeddings
    reference = BTLMLMHeadModel(model.config, init=False)
    reference.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
    ids = torch.randint(0, 50257, (1, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert relative_difference(reference(ids).logits, loaded(ids).logits) <= 1e-5
    assert BTLMLMHeadModel.from_pretrained(tmp_path, dtype="auto").transformer.wte.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("scaling, message", [
    ({"type": "linear", "factor": 2}, "factor must be a float > 1.0"),
    ({"type": "linear", "factor": 1.0}, "factor must be a float > 1.0"),
    ({"type": "linear", "train_seq_len": 1}, "train_seq_len must be an integer > 1"),
    ({"type": "linear", "train_seq_len": 2048.0}, "train_seq_len must be an integer > 1"),
    ({"type": "dynamic", "factor": 2.0}, "type must be 'linear'"),
    ({"factor": 2.0, "train_seq_len": 8}, "must be {type: linear"),
    ({"type": "linear", "factor": 2.0, "train_seq_len": 8}, "must be {type: linear"),
    ({"type": "linear"}, "must be {type: linear"),
])
def test_alibi_scaling_is_validated_as_the_published_code_does(tmp_path, scaling, message):
    (tmp_path / "config.json").write_text(json.dumps({**PUBLISHED_CONFIG, "alibi_scaling": scaling}))
    with pytest.raises(ModelConfigError, match=message) as info:
        BTLMConfig.from_json(tmp_path / "config.json")
    assert str(tmp_path / "config.json") in str(info.value)


@pytest.mark.parametrize("scaling", [{"type": "linear", "factor": 2.0}, {"type": "linear", "train_seq_len": 2048}])
def test_valid_alibi_scaling_is_accepted(scaling):
    assert BTLMConfig(n_embd=64, n_head=4, n_layer=1, alibi_scaling=scaling).alibi_scaling == scaling


def test_sharded_save_replaces_a_single_file_and_back(tmp_path):
    model = tiny_model("alibi")
    save_pretrained(model, tmp_path)
    assert (tmp_path / WEIGHTS_NAME).is_file()
    save_pretrained(model, tmp_path, max_shard_bytes=300_000)
    assert not (tmp_path / WEIGHTS_NAME).exists() and (tmp_path / INDEX_NAME).is_file()
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert set(index["weight_map"]) == set(to_published(model.state_dict(), model.config))
    save_pretrained(model, tmp_path)
    assert not (tmp_path / INDEX_NAME).exists() and not list(tmp_path.glob("model-*-of-*.safetensors"))


def test_an_index_naming_a_missing_shard_is_an_error(tmp_path):
    save_pretrained(tiny_model("alibi"), tmp_path, max_shard_bytes=300_000)
    next(tmp_path.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="names shards that do not exist"):
        BTLMLMHeadModel.from_pretrained(tmp_path)


def test_native_stablelm_folders_load_and_unsupported_features_are_named(tmp_path):
    model = tiny_model("rope", use_bias=True)
    with torch.no_grad():  # biases StableLM lacks must be zero for the native layout
        for block in model.transformer.h:
            for bias in (block.attn.c_proj.bias, block.mlp.c_fc.bias, block.mlp.c_fc2.bias, block.mlp.c_proj.bias):
                bias.zero_()
    config = config_to_stablelm(model.config)
    assert config["use_qkv_bias"]
    save_file(state_to_stablelm(model.state_dict(), model.config), str(tmp_path / WEIGHTS_NAME))
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = BTLMLMHeadModel.from_pretrained(tmp_path)
    ids = torch.randint(0, 50257, (1, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert relative_difference(model(ids).logits, loaded(ids).logits) <= 1e-5
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_key_value_heads": 2, "qk_layernorm": True}))
    with pytest.raises(ModelConfigError, match="grouped-query attention.*qk_layernorm"):
        BTLMLMHeadModel.from_pretrained(tmp_path)
