"""Data parallelism: DDP (replicated model) or FSDP (parameters, gradients and optimizer
state sharded across ranks), and gathering full states from either for checkpoints."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from train.checkpoint import optimizer_tensors
from train.distributed import DistEnv


def shard_fsdp(model) -> None:
    """FSDP2 in place: each transformer block is one unit, the rest (embeddings) the root."""
    from torch.distributed.fsdp import fully_shard

    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)


def wrap_ddp(model, env: DistEnv):
    from torch.nn.parallel import DistributedDataParallel

    ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def no_sync(wrapped, model, fsdp: bool):
    """Skip the gradient all-reduce for all but the last micro-batch of a step."""
    if fsdp:
        class _FsdpNoSync:
            def __enter__(self):
                model.set_requires_gradient_sync(False)

            def __exit__(self, *exc):
                model.set_requires_gradient_sync(True)

        return _FsdpNoSync()
    return wrapped.no_sync() if hasattr(wrapped, "no_sync") else nullcontext()


def to_float(value: torch.Tensor) -> float:
    if hasattr(value, "full_tensor"):  # a DTensor (FSDP gradient norm)
        value = value.full_tensor()
    return float(value)


def full_model_state(model, fsdp: bool) -> dict[str, torch.Tensor]:
    """The complete state dict on rank 0 (a collective under FSDP; other ranks get {})."""
    if not fsdp:
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model, optimizer, fsdp: bool) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]] | None:
    """Optimizer tensors named ``state.<parameter>.<moment>`` and JSON-able groups (rank 0)."""
    if not fsdp:
        return optimizer_tensors(optimizer, model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not state:
        return None
    tensors = {}
    for name, values in state["state"].items():
        for key, value in values.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state.{name}.{key}"] = tensor.detach().cpu().contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, groups


def load_fsdp_optimizer(model, optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> None:
    """Every rank passes the full state; each keeps its own shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name, moment = key[len("state."):].rsplit(".", 1)
        state.setdefault(name, {})[moment] = tensor
    restored = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in groups]
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": restored},
                             options=StateDictOptions(full_state_dict=True))
