"""Attention: ALiBi against a slow direct computation, rotary, segments, KV-cache generation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model import BTLMConfig, BTLMLMHeadModel
from model.attention.positions import alibi_slopes

TINY = dict(vocab_size=53, n_positions=32, n_embd=24, n_layer=2, n_head=3, n_inner=40, initializer_range=0.2,
            mup_base_width=12, mup_embeddings_scale=2.0, mup_output_alpha=1.5, mup_scale_qk_dot_by_d=True)


def make(**cfg) -> BTLMLMHeadModel:
    torch.manual_seed(0)
    model = BTLMLMHeadModel(BTLMConfig(**cfg)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def test_standard_slopes():
    assert alibi_slopes(8) == [2 ** -(k + 1) for k in range(8)]
    assert alibi_slopes(4) == [2**-2, 2**-4, 2**-6, 2**-8]
    # Not a power of two: the 4-head slopes, then every other slope of the 8-head set.
    assert alibi_slopes(6) == [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]
    assert len(alibi_slopes(32)) == 32 and alibi_slopes(32)[0] == 2 ** -0.25


def slow_reference_logits(model: BTLMLMHeadModel, ids: torch.Tensor) -> torch.Tensor:
    """BTLM forward written out directly: explicit loops over heads, queries and keys."""
    c = model.config
    t = model.transformer
    T = ids.shape[1]
    slopes = alibi_slopes(c.n_head)
    if c.alibi_scaling is None:
        factor = 1.0
    elif "factor" in c.alibi_scaling:
        factor = c.alibi_scaling["factor"]
    else:
        factor = max(1.0, T / c.alibi_scaling["train_seq_len"])
    x = t.wte.weight[ids[0]] * c.mup_embeddings_scale  # [T, d]
    D = c.head_dim
    for blk in t.h:
        h = F.layer_norm(x, (c.n_embd,), blk.ln_1.weight, blk.ln_1.bias, c.layer_norm_epsilon)
        qkv = h @ blk.attn.c_attn.weight.T + blk.attn.c_attn.bias
        q, k, v = qkv.split(c.n_embd, dim=-1)
        out = torch.zeros(T, c.n_embd, dtype=torch.float64)
        for head in range(c.n_head):
            sl = slice(head * D, (head + 1) * D)
            for i in range(T):
                scores = []
                for j in range(i + 1):
                    dot = float((q[i, sl].double() * k[j, sl].double()).sum())
                    scores.append(dot / D - slopes[head] * (i - j) / factor)
                m = max(scores)
                w = [math.exp(s - m) for s in scores]
                total = sum(w)
                for j in range(i + 1):
                    out[i, sl] += (w[j] / total) * v[j, sl].double()
        x = x + (out.float() @ blk.attn.c_proj.weight.T + blk.attn.c_proj.bias)
        h = F.layer_norm(x, (c.n_embd,), blk.ln_2.weight, blk.ln_2.bias, c.layer_norm_epsilon)
        mlp = (h @ blk.mlp.c_fc.weight.T + blk.mlp.c_fc.bias) * F.silu(h @ blk.mlp.c_fc2.weight.T + blk.mlp.c_fc2.bias)
        x = x + mlp @ blk.mlp.c_proj.weight.T + blk.mlp.c_proj.bias
    x = F.layer_norm(x, (c.n_embd,), t.ln_f.weight, t.ln_f.bias, c.layer_norm_epsilon)
    return (x @ t.wte.weight.T * c.mup_output_alpha * c.mup_width_scale)[None]


@pytest.mark.parametrize("scaling", [None, {"type": "linear", "factor": 2.5}, {"type": "linear", "train_seq_len": 4}])
def test_alibi_matches_slow_reference(scaling):
    model = make(**TINY, alibi_scaling=scaling)
    ids = torch.randint(0, 53, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = slow_reference_logits(model, ids)
        got = model(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_alibi_scaling_changes_long_sequences_only():
    base = make(**TINY)
    scaled = make(**TINY, alibi_scaling={"type": "linear", "train_seq_len": 8})
    short = torch.randint(0, 53, (1, 8), generator=torch.Generator().manual_seed(4))
    long = torch.randint(0, 53, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(base(short).logits, scaled(short).logits)
        assert not torch.allclose(base(long).logits, scaled(long).logits)


def test_rope_is_relative_and_partial():
    model = make(**dict(TINY, n_head=2, position_embedding_type="rope", rotary_pct=0.5))
    rotary = model.transformer.rotary_emb
    assert rotary.rotary_dim == 6
    q, k = torch.randn(1, 1, 1, 12), torch.randn(1, 1, 1, 12)

    def score(pq, pk):
        cq, sq = rotary.cos_sin(pq, 1, q.device, q.dtype)
        ck, sk = rotary.cos_sin(pk, 1, k.device, k.dtype)
        return float((rotary.rotate(q, cq, sq) * rotary.rotate(k, ck, sk)).sum())

    assert score(7, 3) == pytest.approx(score(14, 10), rel=1e-5)  # depends on distance only
    assert score(7, 3) != pytest.approx(score(7, 5), rel=1e-3)
    c, s = rotary.cos_sin(5, 1, q.device, q.dtype)
    assert torch.equal(rotary.rotate(q, c, s)[..., 6:], q[..., 6:])  # pass-through dims untouched


@pytest.mark.parametrize("pe", ["alibi", "rope", "learned"])
def test_segment_ids_equal_separate_documents(pe):
    model = make(**dict(TINY, position_embedding_type=pe))
    a = torch.randint(0, 53, (1, 5), generator=torch.Generator().manual_seed(5))
    b = torch.randint(0, 53, (1, 7), generator=torch.Generator().manual_seed(6))
    packed = torch.cat((a, b), dim=1)
    segments = torch.tensor([[0] * 5 + [1] * 7])
    with torch.no_grad():
        out = model(packed, segment_ids=segments).logits
        alone_a, alone_b = model(a).logits, model(b).logits
        unsegmented = model(packed).logits
    torch.testing.assert_close(out[:, :5], alone_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 5:], alone_b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unsegmented[:, 5:], alone_b, atol=1e-3)


CACHE_CASES = {
    "alibi": dict(position_embedding_type="alibi"),
    "alibi-factor": dict(position_embedding_type="alibi", alibi_scaling={"type": "linear", "factor": 3.0}),
    # Length-dependent scaling: beyond train_seq_len every step changes the distance scale, so
    # cached states of deeper layers differ from a recomputation; with one layer they cannot.
    "alibi-train-len": dict(position_embedding_type="alibi", n_layer=1,
                            alibi_scaling={"type": "linear", "train_seq_len": 8}),
    "rope": dict(position_embedding_type="rope"),
    "learned": dict(position_embedding_type="learned"),
}


@pytest.mark.parametrize("case", list(CACHE_CASES))
def test_cached_generation_matches_full_forward_every_step(case):
    model = make(**{**TINY, **CACHE_CASES[case]})
    prompt = torch.randint(0, 53, (2, 5), generator=torch.Generator().manual_seed(7))
    tokens, scores = model.generate(prompt, max_new_tokens=9, temperature=1.0,
                                    generator=torch.Generator().manual_seed(0), return_scores=True)
    assert tokens.shape == (2, 14) and scores.shape == (2, 9, 53)
    with torch.no_grad():
        for step in range(9):  # the uncached forward pass over everything seen so far
            full = model(tokens[:, : 5 + step]).logits[:, -1]
            torch.testing.assert_close(scores[:, step], full, rtol=1e-5, atol=1e-5)
        if case != "alibi-train-len":
            torch.testing.assert_close(scores, model(tokens).logits[:, 4:13], rtol=1e-5, atol=1e-5)


def test_cache_continuation_with_several_new_tokens():
    """A multi-token chunk after a cache (prefill in two parts) needs the offset causal mask."""
    for pe in ("alibi", "rope", "learned"):
        model = make(**dict(TINY, position_embedding_type=pe))
        ids = torch.randint(0, 53, (1, 10), generator=torch.Generator().manual_seed(8))
        with torch.no_grad():
            first = model(ids[:, :4], use_cache=True)
            second = model(ids[:, 4:], past_key_values=first.past_key_values, use_cache=True)
            full = model(ids).logits
        torch.testing.assert_close(torch.cat((first.logits, second.logits), 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pe", ["alibi", "rope"])
def test_training_step_after_inference_mode_evaluation(pe):
    """Cached position tensors built under inference_mode must not leak into training."""
    model = make(**dict(TINY, position_embedding_type=pe)).train()
    ids = torch.randint(0, 53, (2, 8), generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        model(ids)
    model(ids, labels=ids).loss.backward()
    assert model.transformer.wte.weight.grad is not None


def test_segment_ids_with_cache_is_an_error():
    model = make(**TINY)
    ids = torch.randint(0, 53, (1, 4))
    past = model(ids, use_cache=True).past_key_values
    with pytest.raises(ValueError, match="segment_ids"):
        model(ids[:, :1], segment_ids=torch.zeros(1, 1, dtype=torch.long), past_key_values=past)
