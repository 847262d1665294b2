"""Hugging Face checkpoint format: names, shapes, Conv1D layout, round trips."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from model import BTLMConfig, BTLMLMHeadModel, CheckpointError

SMALL = dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=48, initializer_range=0.05,
             mup_base_width=16, mup_embeddings_scale=3.0, mup_output_alpha=2.0, mup_scale_qk_dot_by_d=True)
STABLELM_LIKE = dict(SMALL, position_embedding_type="rope", rotary_pct=0.5, use_bias=False, tie_word_embeddings=False,
                     mup_base_width=None, mup_embeddings_scale=1.0, mup_output_alpha=1.0, mup_scale_qk_dot_by_d=False)


def make(**cfg) -> BTLMLMHeadModel:
    torch.manual_seed(0)
    model = BTLMLMHeadModel(BTLMConfig(**cfg)).eval()
    with torch.no_grad():  # non-trivial biases and norms, so a wrong layout cannot hide behind zeros
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def ids(vocab=97, shape=(2, 11)):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("cfg", [SMALL, STABLELM_LIKE, dict(SMALL, position_embedding_type="learned")], ids=["btlm", "stablelm", "learned"])
def test_round_trip_identical_logits(tmp_path, cfg):
    model = make(**cfg)
    model.save_pretrained(tmp_path)
    loaded = BTLMLMHeadModel.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    x = ids()
    assert torch.equal(model(x).logits, loaded(x).logits)
    assert loaded.config.tie_word_embeddings == (loaded.lm_head.weight is loaded.transformer.wte.weight)


def test_saved_names_and_shapes_match_published_layout(tmp_path):
    model = make(**SMALL)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "btlm" and config["architectures"] == ["BTLMLMHeadModel"]
    tensors = load_file(str(tmp_path / "model.safetensors"))
    d, inner, V, H = 32, 48, 97, 4
    expected = {"transformer.wte.weight": (V, d), "transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,),
                "transformer.relative_pe.slopes": (H, 1)}
    for i in range(2):
        p = f"transformer.h.{i}."
        expected.update({
            p + "ln_1.weight": (d,), p + "ln_1.bias": (d,), p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
            p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
            p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
            p + "mlp.c_fc.weight": (d, inner), p + "mlp.c_fc.bias": (inner,),
            p + "mlp.c_fc2.weight": (d, inner), p + "mlp.c_fc2.bias": (inner,),
            p + "mlp.c_proj.weight": (inner, d), p + "mlp.c_proj.bias": (d,),
        })
    assert {k: tuple(v.shape) for k, v in tensors.items()} == expected
    # Conv1D layout: c_attn columns are Q | K | V, y = x @ W + b.
    block = model.transformer.h[0]
    x = torch.randn(3, d)
    w, b = tensors["transformer.h.0.attn.c_attn.weight"], tensors["transformer.h.0.attn.c_attn.bias"]
    torch.testing.assert_close(x @ w + b, block.attn.c_attn(x))
    torch.testing.assert_close(tensors["transformer.relative_pe.slopes"].flatten(), torch.tensor([2**-2, 2**-4, 2**-6, 2**-8]))


def hand_written_published_state(model: BTLMLMHeadModel) -> dict[str, torch.Tensor]:
    """The published layout written out by hand from the native modules (not via the converter)."""
    t = model.transformer
    state = {"transformer.wte.weight": t.wte.weight, "transformer.ln_f.weight": t.ln_f.weight,
             "transformer.ln_f.bias": t.ln_f.bias}
    for i, blk in enumerate(t.h):
        p = f"transformer.h.{i}."
        lin = {"attn.c_attn": blk.attn.c_attn, "attn.c_proj": blk.attn.c_proj, "mlp.c_fc": blk.mlp.c_fc,
               "mlp.c_fc2": blk.mlp.c_fc2, "mlp.c_proj": blk.mlp.c_proj}
        for name, mod in lin.items():
            state[p + name + ".weight"] = mod.weight.T  # [in, out]
            state[p + name + ".bias"] = mod.bias
        for name in ("ln_1", "ln_2"):
            state[p + name + ".weight"] = getattr(blk, name).weight
            state[p + name + ".bias"] = getattr(blk, name).bias
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


@pytest.mark.parametrize("variant", ["no_slopes", "with_slopes_and_lm_head"])
def test_hand_written_published_checkpoint_loads(tmp_path, variant):
    model = make(**SMALL)
    state = hand_written_published_state(model)
    if variant == "with_slopes_and_lm_head":
        state["transformer.relative_pe.slopes"] = torch.tensor([[0.25], [0.0625], [0.015625], [0.00390625]])
        state["lm_head.weight"] = state["transformer.wte.weight"].clone()
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    model.config.to_json(tmp_path / "config.json")
    loaded = BTLMLMHeadModel.from_pretrained(tmp_path).eval()
    x = ids()
    torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)


def test_bf16_checkpoint_and_sharded_index(tmp_path):
    model = make(**SMALL)
    state = hand_written_published_state(model)
    names = sorted(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: state[k].to(torch.bfloat16) for k in keys}, str(tmp_path / shard), metadata={"format": "pt"})
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model.config.to_json(tmp_path / "config.json")
    loaded = BTLMLMHeadModel.from_pretrained(tmp_path)
    assert loaded.transformer.wte.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.transformer.wte.weight, model.transformer.wte.weight.to(torch.bfloat16).float())


def test_bad_checkpoints_are_rejected_with_reasons(tmp_path):
    model = make(**SMALL)
    model.config.to_json(tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickle"):
        BTLMLMHeadModel.from_pretrained(tmp_path)
    state = hand_written_published_state(model)
    del state["transformer.h.1.mlp.c_fc2.bias"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing tensors \['transformer.h.1.mlp.c_fc2.bias'\]"):
        BTLMLMHeadModel.from_pretrained(tmp_path)
    state = hand_written_published_state(model)
    state["transformer.h.0.attn.c_proj.weight"] = torch.zeros(33, 32)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"c_proj.weight has shape \(33, 32\), config expects \(32, 32\)"):
        BTLMLMHeadModel.from_pretrained(tmp_path)
    state = hand_written_published_state(model)
    state["lm_head.weight"] = torch.zeros_like(state["transformer.wte.weight"])
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="lm_head.weight differs"):
        BTLMLMHeadModel.from_pretrained(tmp_path)
