"""Validation loss at every phase length on the same text, and mean loss at each token position (long context)."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Callable

import numpy as np
import torch

from model.loss import target_losses as lm_target_losses
from model.loss import token_losses as lm_token_losses
from train.data import ShardSet
from train.distributed import DistEnv, sum_across


@torch.no_grad()
def validation_losses(model, shards: ShardSet, seq_lens: list[int], tokens: int, micro_tokens: int, env: DistEnv,
                      autocast: Callable[[], AbstractContextManager], with_segments: bool,
                      buckets: int) -> dict[str, Any]:
    """Validation loss at every phase length on the same text, and loss by position on it.

    The text is the first ``tokens`` worth of rows of ``shards`` (the longest phase's
    validation rows: spans of ``shards.seq_len`` tokens). At each length L every span is cut
    into windows of L tokens, each a sequence of its own, as in training at that length.
    The loss averages the same targets at every length: all but the first token of each
    span and every token that starts a window at some length (it has no context there).
    ``by_position`` buckets the loss by position in the span (log-spaced): where a window
    restarts, the shorter length loses its context; the longer one keeps it.
    """
    span = shards.seq_len
    if any(L > span for L in seq_lens):
        raise ValueError(f"validation spans of {span} tokens are shorter than phase length {max(seq_lens)}")
    count = min(max(tokens // span, 1), len(shards))
    if count >= env.world_size:  # equal work per rank (FSDP ranks must run the same forwards)
        count -= count % env.world_size
    rows = np.arange(count, dtype=np.int64)
    shared = count < env.world_size  # too few spans to split: every rank evaluates all of them
    mine = rows if shared else rows[env.rank :: env.world_size]
    sums = torch.zeros(len(seq_lens), span, dtype=torch.float64)  # loss summed over spans, by target position
    spans_per_pass = max(micro_tokens // span, 1)
    was_training = model.training
    model.eval()
    with _full_parameters(model):
        for s in range(0, len(mine), spans_per_pass):
            chunk = mine[s : s + spans_per_pass]
            ids = torch.from_numpy(shards.tokens(chunk))
            seg = torch.from_numpy(shards.segment_ids(chunk)) if with_segments else None
            for i, L in enumerate(seq_lens):
                for start, end, losses in _windows(model, ids, seg, L, micro_tokens, env.device, autocast):
                    sums[i, start + 1 : end] += losses.sum(0).double()
    model.train(was_training)
    sums = sum_across(env, sums)
    n_spans = count
    if shared:
        sums /= env.world_size
    common = np.ones(span, dtype=bool)
    common[0] = False
    for L in seq_lens:
        common[::L] = False
    edges = np.unique(np.geomspace(1, span, buckets + 1).astype(np.int64))
    ranges = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if common[a:b].any()]
    per_position = (sums / n_spans).numpy()
    out: dict[str, Any] = {"spans": n_spans, "span_len": span, "targets": int(common.sum()) * n_spans,
                           "loss": {}, "perplexity": {},
                           "by_position": {"bucket_start": [int(a) for a, _ in ranges],
                                           "bucket_end": [int(b) - 1 for _, b in ranges], "loss": {}}}
    late = common & (np.arange(span) >= min(seq_lens))  # targets where the lengths see different context
    if late.any() and len(seq_lens) > 1:
        out["late"] = {"from_position": min(seq_lens), "targets": int(late.sum()) * n_spans,
                       "loss": {str(L): float(per_position[i][late].mean()) for i, L in enumerate(seq_lens)}}
    for i, L in enumerate(seq_lens):
        mean = float(per_position[i][common].mean())
        out["loss"][str(L)] = mean
        out["perplexity"][str(L)] = math.exp(min(mean, 50.0))
        out["by_position"]["loss"][str(L)] = [float(per_position[i][a:b][common[a:b]].mean()) for a, b in ranges]
    return out


def _windows(model, ids: torch.Tensor, seg: torch.Tensor | None, L: int, micro_tokens: int, device: torch.device,
             autocast: Callable[[], AbstractContextManager]):
    """Cut spans [n, span] into windows of L tokens (the last may be shorter) and yield, per window
    offset, (start, end, per-token losses [n, end - start - 1]); micro_tokens // L windows per forward."""
    n, span = ids.shape
    full = span // L
    pieces = [(0, full * L, L)] if full else []
    if span % L:
        pieces.append((full * L, span, span - full * L))
    for first, last, length in pieces:
        windows = ids[:, first:last].reshape(-1, length)  # span-major: window w of span r is row r * per + w
        window_seg = seg[:, first:last].reshape(-1, length) if seg is not None else None
        losses = []
        rows = max(micro_tokens // length, 1)
        for r in range(0, windows.shape[0], rows):
            x = windows[r : r + rows].to(device)
            s = window_seg[r : r + rows].to(device) if window_seg is not None else None
            with autocast():
                hidden, _ = model.transformer(x, segment_ids=s)
                losses.append(lm_token_losses(hidden, model.lm_head.weight, x, model.output_logits_scale).cpu())
        per = (last - first) // length
        by_window = torch.cat(losses).view(n, per, length - 1)
        for w in range(per):
            yield first + w * length, first + (w + 1) * length, by_window[:, w]


@contextmanager
def _full_parameters(model):
    """Under FSDP the root's own parameters (embeddings, final norm) are gathered for direct calls
    of its sub-modules; the blocks gather theirs in their own forward hooks."""
    unshard = getattr(model, "unshard", None)
    if unshard is None:
        yield
        return
    unshard()
    try:
        yield
    finally:
        model.reshard()


@torch.no_grad()
def token_losses(model, ids: torch.Tensor, chunk: int, autocast: Callable[[], AbstractContextManager]) -> torch.Tensor:
    """Cross-entropy of every next-token prediction of one sequence [1, n] -> [n - 1].

    The sequence is fed in chunks of ``chunk`` tokens through the key/value cache, so
    attention holds at most chunk x n scores and logits chunk rows at a time.
    """
    losses, past = [], None
    n = ids.shape[1]
    for start in range(0, n - 1, chunk):
        piece = ids[:, start : min(start + chunk, n - 1)]
        with autocast():
            hidden, past = model.transformer(piece, past_key_values=past, use_cache=True)
            targets = ids[:, start + 1 : start + 1 + piece.shape[1]]
            losses.append(lm_target_losses(hidden, model.lm_head.weight, targets, model.output_logits_scale)[0])
    return torch.cat(losses)


@torch.no_grad()
def loss_by_position(model, shards: ShardSet, seq_len: int, sequences: int, buckets: int, chunk: int,
                     device: torch.device, autocast: Callable[[], AbstractContextManager]) -> dict[str, Any]:
    """Mean loss at each position (log-spaced buckets) over validation text of ``seq_len`` tokens.

    Long sequences are consecutive validation rows laid end to end, so positions past a
    row's length see real earlier context; the curve shows how far attention extrapolates.
    """
    rows_per_seq = math.ceil(seq_len / shards.seq_len)
    sequences = min(sequences, len(shards) // rows_per_seq)
    if sequences < 1:
        raise ValueError(
            f"validation split at seq_len {shards.seq_len} has {len(shards)} rows; "
            f"a {seq_len}-token sequence needs {rows_per_seq}"
        )
    was_training = model.training
    model.eval()
    total = torch.zeros(seq_len - 1, dtype=torch.float64)
    for s in range(sequences):
        rows = np.arange(s * rows_per_seq, (s + 1) * rows_per_seq, dtype=np.int64)
        ids = torch.from_numpy(shards.tokens(rows).reshape(1, -1)[:, :seq_len]).to(device)
        total += token_losses(model, ids, chunk, autocast).double().cpu()
    model.train(was_training)
    per_position = (total / sequences).numpy()
    edges = np.unique(np.geomspace(1, seq_len - 1, buckets + 1).astype(np.int64))
    edges[0], edges[-1] = 0, seq_len - 1
    starts, ends = edges[:-1], edges[1:]
    return {
        "seq_len": seq_len,
        "sequences": sequences,
        "bucket_start": [int(a) + 1 for a in starts],  # position of the predicted token
        "bucket_end": [int(b) for b in ends],
        "loss": [float(per_position[a:b].mean()) for a, b in zip(starts, ends)],
    }
