"""Validation loss per phase length, and mean loss at each token position (long context)."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from train.data import ShardSet
from train.distributed import DistEnv, sum_across


@torch.no_grad()
def validation_loss(model, shards: ShardSet, tokens: int, micro_rows: int, env: DistEnv,
                    autocast: Callable[[], AbstractContextManager], with_segments: bool) -> dict[str, float]:
    """Mean next-token loss over the first ``tokens`` worth of validation rows (all ranks)."""
    count = min(max(tokens // shards.seq_len, 1), len(shards))
    if count >= env.world_size:  # equal work per rank (FSDP ranks must run the same forwards)
        count -= count % env.world_size
    rows = np.arange(count, dtype=np.int64)
    mine = rows[env.rank :: env.world_size]
    total = torch.zeros(2, dtype=torch.float64)
    was_training = model.training
    model.eval()
    for i in range(0, len(mine), micro_rows):
        chunk = mine[i : i + micro_rows]
        ids = torch.from_numpy(shards.tokens(chunk)).to(env.device)
        seg = torch.from_numpy(shards.segment_ids(chunk)).to(env.device) if with_segments else None
        with autocast():
            loss = model(ids, labels=ids, segment_ids=seg, return_logits=False).loss
        targets = ids.shape[0] * (ids.shape[1] - 1)
        total += torch.tensor([float(loss) * targets, targets], dtype=torch.float64)
    model.train(was_training)
    total = sum_across(env, total)
    mean = float(total[0] / total[1])
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": int(total[1]), "rows": len(rows)}


@torch.no_grad()
def token_losses(model, ids: torch.Tensor, chunk: int, autocast: Callable[[], AbstractContextManager]) -> torch.Tensor:
    """Cross-entropy of every next-token prediction of one sequence [1, n] -> [n - 1].

    The sequence is fed in chunks of ``chunk`` tokens through the key/value cache, so
    attention holds at most chunk x n scores and logits chunk x vocab at a time.
    """
    losses, past = [], None
    n = ids.shape[1]
    for start in range(0, n - 1, chunk):
        piece = ids[:, start : min(start + chunk, n - 1)]
        with autocast():
            out = model(piece, past_key_values=past, use_cache=True, return_logits=True)
        past = out.past_key_values
        targets = ids[:, start + 1 : start + 1 + piece.shape[1]]
        losses.append(F.cross_entropy(out.logits[0].float(), targets[0], reduction="none"))
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
