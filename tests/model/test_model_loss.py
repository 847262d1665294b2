"""The chunked (fused) language-model loss equals the plain one, values and gradients."""

from __future__ import annotations

import pytest
import torch

from model import BTLMConfig, BTLMLMHeadModel
from model.loss import chunked_lm_loss, lm_loss_from_logits

CFG = dict(vocab_size=211, n_positions=64, n_embd=32, n_layer=2, n_head=2, n_inner=64, initializer_range=0.1,
           mup_base_width=16, mup_embeddings_scale=4.0, mup_output_alpha=2.0, mup_scale_qk_dot_by_d=True)


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 211, (3, 40), generator=g)
    labels = ids.clone()
    labels[0, 10:20] = -100
    labels[2, :] = -100
    labels[2, 5] = 17
    return ids, labels


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("tied", [True, False])
def test_chunked_loss_and_gradients_equal_unchunked(tied):
    torch.manual_seed(0)
    model = BTLMLMHeadModel(BTLMConfig(**CFG, tie_word_embeddings=tied))
    ids, labels = batch()
    full = model(ids, labels=labels)
    full.loss.backward()
    g_full = grads(model)
    model.zero_grad()
    fused = model(ids, labels=labels, return_logits=False)
    assert fused.logits is None
    fused.loss.backward()
    torch.testing.assert_close(fused.loss, full.loss, rtol=1e-6, atol=1e-6)
    for name, g in grads(model).items():
        torch.testing.assert_close(g, g_full[name], rtol=1e-5, atol=1e-7, msg=name)


def test_many_small_chunks_and_loss_scaling():
    torch.manual_seed(0)
    hidden = torch.randn(2, 13, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=True)
    labels = torch.randint(0, 50, (2, 13))
    labels[1, 3] = -100
    ref = lm_loss_from_logits((hidden @ weight.T) * 0.7, labels)
    (3 * ref).backward()
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    loss = chunked_lm_loss(hidden, weight, labels, 0.7, chunk_rows=5)
    (3 * loss).backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(hidden.grad, gh)
    torch.testing.assert_close(weight.grad, gw)
    with torch.no_grad():
        torch.testing.assert_close(chunked_lm_loss(hidden, weight, labels, 0.7, chunk_rows=4), ref)


def test_chunked_loss_under_bf16_autocast():
    torch.manual_seed(0)
    model = BTLMLMHeadModel(BTLMConfig(**CFG))
    ids, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(ids, labels=labels).loss
        fused = model(ids, labels=labels, return_logits=False).loss
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, full, rtol=2e-2, atol=2e-2)
    fused.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("chunk_rows, block_chunks", [(7, 1), (7, 3), (64, 4), (1000, 2)])
def test_weight_gradient_blocks_and_chunk_sizes_give_the_same_result(chunk_rows, block_chunks):
    torch.manual_seed(1)
    hidden = torch.randn(3, 40, 16, requires_grad=True)
    weight = torch.randn(97, 16, requires_grad=True)
    labels = torch.randint(0, 97, (3, 40))
    labels[1, :13] = -100
    ref = lm_loss_from_logits((hidden @ weight.T) * 1.3, labels)
    ref.backward()
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    loss = chunked_lm_loss(hidden, weight, labels, 1.3, chunk_rows=chunk_rows, block_chunks=block_chunks)
    loss.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(hidden.grad, gh)
    torch.testing.assert_close(weight.grad, gw)


def test_bf16_autocast_loss_and_gradients_are_close_to_fp32():
    """Under bf16 autocast the matmuls run in bf16, the log-softmax in fp32."""
    torch.manual_seed(2)
    hidden = torch.randn(2, 300, 32, requires_grad=True)
    weight = (0.3 * torch.randn(500, 32)).requires_grad_()
    labels = torch.randint(0, 500, (2, 300))
    ref = lm_loss_from_logits((hidden @ weight.T) * 0.9, labels)
    ref.backward()
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = chunked_lm_loss(hidden, weight, labels, 0.9, chunk_rows=128, block_chunks=2)
    loss.backward()
    assert loss.dtype == torch.float32 and hidden.grad.dtype == weight.grad.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=1e-2)
    for got, want in ((hidden.grad, gh), (weight.grad, gw)):
        cos = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0)
        assert cos > 0.999
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.05 * want.abs().max().item())


def test_per_token_losses_equal_the_full_logits_cross_entropy():
    from model.loss import target_losses, token_losses

    torch.manual_seed(3)
    hidden, weight = torch.randn(2, 30, 8), torch.randn(41, 8)
    labels = torch.randint(0, 41, (2, 30))
    logits = (hidden @ weight.T) * 1.7
    want = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 41), labels[:, 1:].reshape(-1),
                                             reduction="none").view(2, 29)
    torch.testing.assert_close(token_losses(hidden, weight, labels, 1.7, chunk_rows=7), want)
    torch.testing.assert_close(target_losses(hidden[:, :-1], weight, labels[:, 1:], 1.7), want)
