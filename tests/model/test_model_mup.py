"""muP: initialization, AdamW parameter groups, and a coordinate check across widths."""

from __future__ import annotations

import math

import pytest
import torch

from model import BTLMConfig, BTLMLMHeadModel

TRUNC_STD = 0.8796  # std of N(0, 1) truncated to [-2, 2]


def test_param_groups_cover_every_parameter_once():
    cfg = BTLMConfig(vocab_size=100, n_positions=32, n_embd=64, n_layer=3, n_head=4, mup_base_width=16)
    model = BTLMLMHeadModel(cfg)
    groups = model.get_mup_param_groups(lr=0.01, weight_decay=0.1)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"hidden", "embeddings", "no_decay"}
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    hidden = {names[id(p)] for p in by_name["hidden"]["params"]}
    assert hidden == {f"transformer.h.{i}.{m}.weight" for i in range(3)
                      for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_fc2", "mlp.c_proj")}
    assert {names[id(p)] for p in by_name["embeddings"]["params"]} == {"transformer.wte.weight"}  # lm_head is tied
    assert all(p.ndim == 1 for p in by_name["no_decay"]["params"])
    assert by_name["hidden"]["lr_scale"] == 0.25 and by_name["hidden"]["lr"] == pytest.approx(0.0025)
    assert by_name["hidden"]["weight_decay"] == 0.1 and by_name["embeddings"]["weight_decay"] == 0.1
    assert by_name["embeddings"]["lr"] == 0.01 and by_name["no_decay"]["lr"] == 0.01
    assert by_name["no_decay"]["weight_decay"] == 0.0
    torch.optim.AdamW(groups)  # valid AdamW groups (extra keys are kept)


def test_param_groups_of_untied_biasless_variant():
    cfg = BTLMConfig(vocab_size=100, n_positions=32, n_embd=64, n_layer=2, n_head=4, use_bias=False,
                     tie_word_embeddings=False, position_embedding_type="learned")
    model = BTLMLMHeadModel(cfg)
    groups = {g["name"]: g for g in model.get_mup_param_groups(1e-3, 0.1)}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in groups["embeddings"]["params"]} == {
        "transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight"}
    assert all(g["lr_scale"] == 1.0 for g in groups.values())  # standard parameterization
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_mup_initialization_scales():
    cfg = BTLMConfig(vocab_size=3000, n_positions=32, n_embd=512, n_layer=4, n_head=8, initializer_range=0.073,
                     mup_base_width=128)
    torch.manual_seed(0)
    model = BTLMLMHeadModel(cfg).requires_grad_(False)
    sigma, m = 0.073, 4.0
    blk = model.transformer.h[1]
    checks = {
        "wte": (model.transformer.wte.weight, sigma),
        "c_attn": (blk.attn.c_attn.weight, sigma / math.sqrt(m)),
        "c_fc2": (blk.mlp.c_fc2.weight, sigma / math.sqrt(m)),
        "attn.c_proj": (blk.attn.c_proj.weight, sigma / math.sqrt(2 * 4 * m)),
        "mlp.c_proj": (blk.mlp.c_proj.weight, sigma / math.sqrt(2 * 4 * m)),
    }
    for name, (w, std) in checks.items():
        assert float(w.std()) == pytest.approx(std * TRUNC_STD, rel=0.02), name
        assert float(w.abs().max()) <= 2 * std + 1e-7, name
    assert float(blk.attn.c_attn.bias.abs().max()) == 0.0
    assert torch.equal(blk.ln_1.weight, torch.ones(512)) and float(blk.ln_1.bias.abs().max()) == 0.0
    assert model.output_logits_scale == pytest.approx(cfg.mup_output_alpha / m)


WIDTHS = (128, 256, 512, 1024)


def coordinate_check(mup: bool) -> dict[str, list[float]]:
    """Mean |activation| per site after 2 AdamW steps at a large LR, for each width (2 layers, head 64)."""
    stats: dict[str, list[float]] = {}
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    for width in WIDTHS:
        torch.manual_seed(0)
        common = dict(vocab_size=256, n_positions=32, n_embd=width, n_layer=2, n_head=width // 64, initializer_range=0.073)
        if mup:
            cfg = BTLMConfig(**common, mup_base_width=128, mup_embeddings_scale=10.0, mup_output_alpha=1.0,
                             mup_scale_qk_dot_by_d=True)
        else:
            cfg = BTLMConfig(**common)  # every mup_* at 1: standard parameterization
        model = BTLMLMHeadModel(cfg)
        opt = torch.optim.AdamW(model.get_mup_param_groups(1e-2, 0.0), betas=(0.9, 0.95))
        for _ in range(2):
            opt.zero_grad()
            model(ids, labels=ids).loss.backward()
            opt.step()
        seen: dict[str, float] = {}

        def record(name):
            def hook(module, inputs, output):
                seen[name] = float(output.abs().mean())
            return hook

        model.transformer.drop.register_forward_hook(record("embeddings"))
        for i, block in enumerate(model.transformer.h):
            block.attn.register_forward_hook(record(f"attn.{i}"))
            block.mlp.register_forward_hook(record(f"mlp.{i}"))
        with torch.no_grad():
            seen["logits"] = float(model(ids).logits.abs().mean())
        for name, value in seen.items():
            stats.setdefault(name, []).append(value)
    return stats


@pytest.mark.slow
def test_coordinate_check_flat_under_mup():
    stats = coordinate_check(mup=True)
    for name, values in stats.items():
        assert max(values) / min(values) < 2.0, (name, values)


@pytest.mark.slow
def test_coordinate_check_grows_with_width_under_standard_parameterization():
    stats = coordinate_check(mup=False)
    for name in ("attn.0", "mlp.0", "attn.1", "mlp.1"):
        values = stats[name]
        assert all(b > a for a, b in zip(values, values[1:])), (name, values)
        assert values[-1] / values[0] > 4.0, (name, values)
