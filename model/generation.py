"""Autoregressive generation with a key/value cache: greedy, temperature, top-k, top-p."""

from __future__ import annotations

import torch


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set logits outside the top-k / nucleus (top-p) set to -inf; logits is [B, V]."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the best is always kept.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
    return_scores: bool = False,
):
    """Extend ``input_ids`` [B, T] by up to ``max_new_tokens``; temperature 0 is greedy.

    A sequence that produced ``eos_token_id`` is padded with it; generation stops early
    once every sequence has finished. With ``return_scores`` also returns the raw logits
    of every step, [B, steps, V].
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    tokens = input_ids
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    scores = []
    past = None
    step_input = input_ids
    for _ in range(max_new_tokens):
        out = model(step_input, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[:, -1, :].float()
        if return_scores:
            scores.append(logits)
        if temperature == 0:
            next_token = logits.argmax(dim=-1)
        else:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
            next_token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        if eos_token_id is not None:
            next_token = torch.where(finished, torch.full_like(next_token, eos_token_id), next_token)
            finished |= next_token == eos_token_id
        tokens = torch.cat((tokens, next_token[:, None]), dim=1)
        step_input = next_token[:, None]
        if eos_token_id is not None and bool(finished.all()):
            break
    if return_scores:
        if not scores:
            return tokens, torch.empty(input_ids.shape[0], 0, model.config.vocab_size)
        return tokens, torch.stack(scores, dim=1)
    return tokens
