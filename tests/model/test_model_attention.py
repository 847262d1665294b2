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


def explicit_alibi_attention(q, k, v, slopes, scale):
    T = q.shape[2]
    distance = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    bias = -slopes.to(q.dtype)[:, None, None] * distance
    bias = bias.masked_fill(distance < 0, float("-inf"))[None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


@pytest.mark.parametrize("split", [True, False])
def test_fused_alibi_attention_matches_float64_reference_and_gradients(split, monkeypatch):
    """Mask-free ALiBi over two and a half query chunks, forward and backward: the CPU kernel
    pair merged by log-sum-exp, and the public SDPA path (bottom-right causal) used elsewhere."""
    import model.attention.sdpa as attention
    from model.attention.sdpa import CHUNK, alibi_causal_attention

    monkeypatch.setattr(attention, "SPLIT_CAUSAL", split and attention.SPLIT_CAUSAL)

    g = torch.Generator().manual_seed(11)
    B, H, T, D = 2, 4, 2 * CHUNK + 300, 16
    q, k, v = (torch.randn(B, H, T, D, generator=g, requires_grad=True) for _ in range(3))
    slopes = torch.tensor(alibi_slopes(H)) / 1.5  # as with a distance scaling factor
    weight = torch.randn(B, H, T, D, generator=g)
    fused = alibi_causal_attention(q, k, v, slopes, 1 / D)
    (fused * weight).sum().backward()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    exact = explicit_alibi_attention(q64, k64, v64, slopes.double(), 1 / D)
    (exact * weight.double()).sum().backward()
    torch.testing.assert_close(fused.double(), exact, rtol=1e-4, atol=1e-4)
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(fused, F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1 / D), atol=1e-2)


@pytest.mark.parametrize("scaling", [None, {"type": "linear", "train_seq_len": 400}])
def test_model_takes_the_fused_alibi_path_for_long_fp32_sequences(scaling, monkeypatch):
    import model.attention.sdpa as attention

    model = make(**dict(TINY, n_positions=1024, alibi_scaling=scaling))
    ids = torch.randint(0, 53, (1, attention.MIN_LEN + 100), generator=torch.Generator().manual_seed(12))
    calls = []
    real = attention.alibi_causal_attention
    monkeypatch.setattr(attention, "alibi_causal_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    with torch.no_grad():
        fused = model(ids).logits
        assert len(calls) == TINY["n_layer"]
        monkeypatch.setattr(attention, "MIN_LEN", 10**9)  # force the explicit-mask path
        masked = model(ids).logits
    assert len(calls) == TINY["n_layer"]
    torch.testing.assert_close(fused, masked, rtol=1e-4, atol=1e-4)


def reference_attention(q, k, v, slopes, scale, segment_ids=None):
    """Causal ALiBi attention in float64 with an explicit [B, H, Tq, Tk] mask, through the model's explicit-mask
    path (``masked_attention``); queries are the last Tq positions."""
    from model.attention.dispatch import masked_attention

    Tq, Tk = q.shape[2], k.shape[2]
    distance = (torch.arange(Tk - Tq, Tk)[:, None] - torch.arange(Tk)[None, :]).double()
    bias = (-slopes.double()[:, None, None] * distance).masked_fill(distance < 0, float("-inf"))[None]
    if segment_ids is not None:
        same = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
        bias = bias.masked_fill(~same, float("-inf"))
    return masked_attention(q.double(), k.double(), v.double(), bias, False, scale)


def random_qkv(B, H, T, D, seed, dtype=torch.float32, keys=None):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g).to(dtype).requires_grad_()
    k, v = (torch.randn(B, H, keys or T, D, generator=g).to(dtype).requires_grad_() for _ in range(2))
    return q, k, v


def assert_matches_reference(fn, q, k, v, slopes, scale, segment_ids=None, tol=1e-4, grad_tol=None):
    """fn(q, k, v) against the float64 reference, values and gradients of a random projection."""
    weight = torch.randn(q.shape[:3] + (v.shape[-1],), generator=torch.Generator().manual_seed(99))
    out = fn(q, k, v)
    (out.float() * weight).sum().backward()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    exact = reference_attention(q64, k64, v64, slopes, scale, segment_ids)
    (exact * weight.double()).sum().backward()
    torch.testing.assert_close(out.double(), exact, rtol=tol, atol=tol)
    grad_tol = grad_tol or tol
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=grad_tol, atol=grad_tol)
    return out, exact


def test_fused_alibi_in_bf16_is_as_close_as_bf16_output_rounding():
    """bf16 keeps the ALiBi term exact to fp32 by splitting it over three key columns."""
    from model.attention.sdpa import CHUNK, alibi_causal_attention

    B, H, T, D = 1, 4, CHUNK + 700, 32
    slopes = torch.tensor([2**-0.25, 2**-1, 2**-4, 2**-8])  # 2^-0.25 is not a bf16 number
    q, k, v = random_qkv(B, H, T, D, 21, torch.bfloat16)
    out, exact = assert_matches_reference(lambda q, k, v: alibi_causal_attention(q, k, v, slopes, 1 / D),
                                          q, k, v, slopes, 1 / D, tol=2e-2, grad_tol=5e-2)
    rounding = (exact.to(torch.bfloat16).double() - exact).abs().max()
    assert (out.double() - exact).abs().max() <= 1.5 * rounding
    # one bf16 column for the whole bias (the position alone) would be visibly off
    q_naive = torch.cat((q, (slopes * D).view(1, H, 1, 1).expand(B, H, T, 1).to(q.dtype)), -1)
    k_naive = torch.cat((k, torch.arange(T, dtype=torch.float32).view(1, 1, T, 1).expand(B, H, T, 1).to(k.dtype)), -1)
    v_naive = torch.cat((v, torch.zeros_like(v[..., :1])), -1)
    naive = F.scaled_dot_product_attention(q_naive, k_naive, v_naive, is_causal=True, scale=1 / D)[..., :D]
    assert (naive.double() - exact).abs().max() > 3 * rounding


@pytest.mark.parametrize("dtype, tol, grad_tol", [(torch.float32, 2e-4, 2e-4), (torch.bfloat16, 2e-2, 5e-2)])
def test_per_document_attention_matches_the_masked_reference(dtype, tol, grad_tol):
    """Long documents (own slices, several query chunks), runs of short ones (shared blocks), one token."""
    from model.attention.sdpa import CHUNK, MIN_LEN, document_attention, document_spans

    B, H, T, D = 2, 2, CHUNK + 900, 16
    slopes = torch.tensor([2**-0.5, 2**-3])
    starts = [[0, 30, 31, 200, 260, 900, CHUNK + 899], [0, 2 * MIN_LEN, 2 * MIN_LEN + 7]]
    segments = torch.zeros(B, T, dtype=torch.long)
    for b, row in enumerate(starts):
        for s in row[1:]:
            segments[b, s:] += 1
    q, k, v = random_qkv(B, H, T, D, 22, dtype)
    assert_matches_reference(lambda q, k, v: document_attention(q, k, v, document_spans(segments), slopes, 1 / D),
                             q, k, v, slopes, 1 / D, segments, tol=tol, grad_tol=grad_tol)
    q, k, v = random_qkv(B, H, T, D, 23, dtype)  # no ALiBi (rotary / learned positions): plain causal per document
    assert_matches_reference(lambda q, k, v: document_attention(q, k, v, document_spans(segments), None, 1 / D),
                             q, k, v, torch.zeros(H), 1 / D, segments, tol=tol, grad_tol=grad_tol)


def test_document_pieces_group_short_documents_and_keep_long_ones_alone():
    from model.attention.sdpa import MIN_LEN, SHORT_BLOCK, _pieces

    assert (MIN_LEN, SHORT_BLOCK) == (512, 512)  # the lengths below are chosen around these
    lengths = [10, 10, 600, 300, 300, 100, 700]
    starts = [0, *torch.tensor(lengths).cumsum(0).tolist()]
    pieces = _pieces(starts)
    assert pieces == [(0, 20, [0, 10, 20]), (20, 620, [0, 600]), (620, 920, [0, 300]), (920, 1320, [0, 300, 400]),
                      (1320, 2020, [0, 700])]
    assert sum(e - s for s, e, _ in pieces) == starts[-1]


def test_fused_alibi_after_a_cache_matches_reference():
    """Chunked prefill: new queries at positions past_len.. attend to cached keys without a mask."""
    from model.attention.sdpa import CHUNK, alibi_causal_attention

    B, H, T, D, past = 1, 2, 700, 16, CHUNK + 100
    slopes = torch.tensor([2**-1, 2**-5])
    q, k, v = random_qkv(B, H, T, D, 24, keys=past + T)
    assert_matches_reference(lambda q, k, v: alibi_causal_attention(q, k, v, slopes, 1 / D, q_offset=past),
                             q, k, v, slopes, 1 / D)


@pytest.mark.parametrize("pe", ["alibi", "rope", "learned"])
def test_model_per_document_path_on_long_rows_equals_separate_documents(pe, monkeypatch):
    import model.attention.sdpa as attention

    calls = []
    real = attention.document_attention
    monkeypatch.setattr(attention, "document_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    model = make(**dict(TINY, n_positions=2048, position_embedding_type=pe))
    lengths = [attention.MIN_LEN + 40, 9, 13, attention.MIN_LEN + 3]
    docs = [torch.randint(0, 53, (1, n), generator=torch.Generator().manual_seed(30 + i)) for i, n in enumerate(lengths)]
    segments = torch.cat([torch.full((1, n), i) for i, n in enumerate(lengths)], dim=1)
    with torch.no_grad():
        packed = model(torch.cat(docs, dim=1), segment_ids=segments).logits
        alone = [model(d).logits for d in docs]
    assert len(calls) == TINY["n_layer"]
    torch.testing.assert_close(packed, torch.cat(alone, dim=1), rtol=1e-4, atol=1e-4)


def test_prefill_in_long_chunks_through_the_cache_matches_one_pass():
    from model.attention.sdpa import MIN_LEN

    model = make(**dict(TINY, n_positions=4096))
    ids = torch.randint(0, 53, (1, 3 * MIN_LEN), generator=torch.Generator().manual_seed(40))
    with torch.no_grad():
        first = model(ids[:, : 2 * MIN_LEN], use_cache=True)
        second = model(ids[:, 2 * MIN_LEN :], past_key_values=first.past_key_values, use_cache=True)
        full = model(ids).logits
    torch.testing.assert_close(torch.cat((first.logits, second.logits), 1), full, rtol=1e-4, atol=1e-4)


EAGER_FLEX = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@EAGER_FLEX
@pytest.mark.parametrize("documents", [False, True])
def test_flex_attention_forward_matches_reference(documents):
    """FlexAttention's score_mod and block masks (eager forward: CPUs have no FlexAttention backward)."""
    from model.attention import flex

    B, H, T, D = 2, 2, 384, 16
    slopes = torch.tensor([2**-1, 2**-6])
    segments = None
    if documents:
        segments = torch.zeros(B, T, dtype=torch.long)
        segments[0, 100:] += 1
        segments[0, 101:] += 1
        segments[1, 250:] += 1
    q, k, v = (t.detach() for t in random_qkv(B, H, T, D, 25))
    mask = flex.block_mask(T, T, q.device, segments)
    with torch.no_grad():
        got = flex.flex_attention(q, k, v, slopes, 1 / D, mask, compiled=False)
    torch.testing.assert_close(got.double(), reference_attention(q, k, v, slopes, 1 / D, segments), rtol=1e-5, atol=1e-5)
    if not documents:  # queries after a cache: the score_mod's offset
        mask = flex.block_mask(T - 100, T, q.device)
        with torch.no_grad():
            got = flex.flex_attention(q[:, :, 100:], k, v, slopes, 1 / D, mask, compiled=False)
        torch.testing.assert_close(got.double(), reference_attention(q[:, :, 100:], k, v, slopes, 1 / D),
                                   rtol=1e-5, atol=1e-5)


@EAGER_FLEX
def test_model_flex_path_matches_the_sdpa_paths(monkeypatch):
    """The model's wiring of FlexAttention (chosen on CUDA), run eagerly on this CPU, forward only."""
    from model.attention import flex

    model = make(**dict(TINY, n_positions=1024))
    ids = torch.randint(0, 53, (2, 600), generator=torch.Generator().manual_seed(41))
    segments = (torch.arange(600) >= 250).long().expand(2, 600)
    with torch.no_grad():
        sdpa = model(ids).logits, model(ids, segment_ids=segments).logits
        monkeypatch.setattr(flex, "available", lambda device: True)
        real_kernel = flex._kernel
        monkeypatch.setattr(flex, "_kernel", lambda compiled: real_kernel(False))
        assert model.transformer.attention_context(600, 0, None, ids.float()).kernel == "flex"
        flexed = model(ids).logits, model(ids, segment_ids=segments).logits
    for a, b in zip(sdpa, flexed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_choose_kernel_follows_its_table(monkeypatch):
    """The rows of choose_kernel's docstring, first match wins; FlexAttention only where available."""
    from model.attention import choose_kernel, flex
    from model.attention.sdpa import MIN_LEN

    cpu = torch.device("cpu")
    long, short = MIN_LEN, MIN_LEN - 1
    cases = [  # (q_len, past_len, alibi, documents, dropout) -> kernel on CPU, kernel with FlexAttention
        ((long, 0, True, False, False), "alibi", "flex"),
        ((long, 0, True, False, True), "alibi", "alibi"),  # dropout: FlexAttention has none
        ((long, 7, True, False, False), "alibi", "alibi"),  # cached prefill
        ((short, 0, True, True, False), "documents", "flex"),
        ((long, 0, False, True, False), "documents", "flex"),
        ((short, 0, True, False, False), "mask", "flex"),
        ((1, 9, True, False, False), "mask", "mask"),  # a decode step
        ((long, 0, False, False, False), "causal", "causal"),
        ((1, 9, False, False, False), "full", "full"),
        ((3, 9, False, False, False), "mask", "mask"),
    ]
    assert [choose_kernel(cpu, *args) for args, _, _ in cases] == [k for _, k, _ in cases]
    monkeypatch.setattr(flex, "available", lambda device: True)
    assert [choose_kernel(cpu, *args) for args, _, _ in cases] == [k for _, _, k in cases]
