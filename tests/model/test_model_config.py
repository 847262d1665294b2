"""BTLMConfig: shipped YAML files, strict loading, config.json round trip, parameter counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model import BTLMConfig, BTLMLMHeadModel, ModelConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"
MODEL_CONFIGS = ["btlm-3b-8k", "btlm-demo", "btlm-w128", "btlm-w256", "btlm-w512", "btlm-w1024", "stablelm-3b-4e1t"]


def meta_model(name: str) -> BTLMLMHeadModel:
    with torch.device("meta"):
        return BTLMLMHeadModel(BTLMConfig.from_yaml(CONFIGS / f"{name}.yaml"))


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_shipped_configs_load(name):
    cfg = BTLMConfig.from_yaml(CONFIGS / f"{name}.yaml")
    assert cfg.n_embd % cfg.n_head == 0


def test_btlm_3b_parameter_count_and_published_values():
    model = meta_model("btlm-3b-8k")
    assert model.num_parameters() == 2_646_255_744
    cfg = model.config
    assert cfg.mup_width_scale == pytest.approx(0.1)
    assert (cfg.n_inner, cfg.mup_embeddings_scale, cfg.mup_output_alpha) == (6826, 14.6, 2.22)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_stablelm_parameter_count():
    model = meta_model("stablelm-3b-4e1t")
    assert model.num_parameters() == 2_795_443_200
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert model.transformer.h[0].attn.c_attn.bias is None
    assert model.transformer.h[0].ln_1.bias is not None


def test_width_family_derives_mup_multipliers_from_base_256():
    for width in (128, 256, 512, 1024):
        cfg = BTLMConfig.from_yaml(CONFIGS / f"btlm-w{width}.yaml")
        assert cfg.mup_width_scale == pytest.approx(256 / width)
        assert cfg.head_dim == 64
        assert cfg.n_inner == int(width * 8 / 3)
    demo = BTLMConfig.from_yaml(CONFIGS / "btlm-demo.yaml")
    assert (demo.n_embd, demo.n_layer, demo.n_head, demo.n_positions, demo.mup_width_scale) == (256, 4, 4, 8192, 1.0)


def test_overrides_rescale_width():
    cfg = BTLMConfig.from_yaml(CONFIGS / "btlm-demo.yaml", overrides={"n_embd": 512, "n_head": 8, "n_inner": None})
    assert cfg.mup_width_scale == pytest.approx(0.5)
    assert cfg.n_inner == 1365


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("n_embd: 64\nn_head: 4\nn_layers: 2\n")
    with pytest.raises(ModelConfigError, match=r"bad\.yaml.*'n_layers'"):
        BTLMConfig.from_yaml(path)
    with pytest.raises(ModelConfigError, match="n_laye"):
        BTLMConfig.from_yaml(CONFIGS / "btlm-demo.yaml", overrides={"n_laye": 3})


def test_wrong_type_and_invalid_values(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("n_embd: '64'\n")
    with pytest.raises(ModelConfigError, match="n_embd"):
        BTLMConfig.from_yaml(path)
    path.write_text("n_embd: 64\nn_head: 5\n")
    with pytest.raises(ModelConfigError, match="divisible"):
        BTLMConfig.from_yaml(path)
    path.write_text("position_embedding_type: sinusoidal\n")
    with pytest.raises(ModelConfigError, match="position_embedding_type"):
        BTLMConfig.from_yaml(path)
    path.write_text("n_embd: 512\nn_head: 8\nmup_base_width: 256\nmup_width_scale: 0.25\n")
    with pytest.raises(ModelConfigError, match="contradicts"):
        BTLMConfig.from_yaml(path)


def test_json_round_trip_and_published_config(tmp_path):
    cfg = BTLMConfig.from_yaml(CONFIGS / "btlm-3b-8k.yaml")
    cfg.to_json(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "btlm" and data["architectures"] == ["BTLMLMHeadModel"]
    assert BTLMConfig.from_json(tmp_path / "config.json") == cfg
    # The published config.json (transformers bookkeeping keys included) reads as the same model.
    published = {
        "_name_or_path": "cerebras/btlm-3b-8k-base", "activation_function": "swiglu",
        "architectures": ["BTLMLMHeadModel"], "attn_pdrop": 0.0, "auto_map": {},
        "bos_token_id": 50256, "embd_pdrop": 0.0, "eos_token_id": 50256, "initializer_range": 0.073,
        "layer_norm_epsilon": 1e-05, "model_type": "btlm", "mup_embeddings_scale": 14.6,
        "mup_output_alpha": 2.22, "mup_scale_qk_dot_by_d": True, "mup_width_scale": 0.1,
        "n_embd": 2560, "n_head": 32, "n_inner": 6826, "n_layer": 32, "n_positions": 8192,
        "position_embedding_type": "alibi", "reorder_and_upcast_attn": False, "resid_pdrop": 0.0,
        "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.30.0", "use_cache": True, "vocab_size": 50257,
    }
    (tmp_path / "published.json").write_text(json.dumps(published))
    loaded = BTLMConfig.from_json(tmp_path / "published.json")
    assert loaded.mup_width_scale == 0.1 and loaded.n_inner == 6826 and loaded.tie_word_embeddings


def test_flops_per_token():
    model = meta_model("btlm-3b-8k")
    c = model.config
    n_matmul = model.num_parameters() - 0  # tied: wte counted once, as the output projection
    assert model.flops_per_token(2048) == 6 * n_matmul + 12 * c.n_layer * c.n_embd * 2048
    assert model.num_parameters(exclude_embeddings=True) == 2_646_255_744 - 50257 * 2560
