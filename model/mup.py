"""muP as Cerebras trained BTLM: initialization and AdamW parameter groups.

With width multiplier m = 1 / mup_width_scale (width / base width):
- embeddings (and an untied output matrix): truncated normal, sigma, learning rate lr;
- hidden weights (qkv, c_fc, c_fc2): sigma / sqrt(m), learning rate lr / m;
- output projections (attn.c_proj, mlp.c_proj): sigma / sqrt(2 * n_layer * m), lr / m;
- biases and LayerNorms: 0 / (1, 0), learning rate lr, no weight decay.
With every mup_* value at 1 this is GPT-2's standard parameterization.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.config import BTLMConfig

HIDDEN_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_fc2.weight", "mlp.c_proj.weight")
OUTPUT_PROJ_SUFFIXES = ("attn.c_proj.weight", "mlp.c_proj.weight")
EMBEDDING_NAMES = ("transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight")


def classify(name: str, param: torch.Tensor) -> str:
    """'hidden', 'embeddings' or 'no_decay' for a parameter of BTLMLMHeadModel."""
    if name in EMBEDDING_NAMES:
        return "embeddings"
    if name.endswith(HIDDEN_SUFFIXES):
        return "hidden"
    if param.ndim == 1:  # biases and LayerNorm weights
        return "no_decay"
    raise ValueError(f"parameter {name!r} (shape {tuple(param.shape)}) has no muP rule")


def trunc_normal_(t: torch.Tensor, std: float) -> torch.Tensor:
    """Normal(0, std) truncated to [-2 std, 2 std], by redrawing the ~4.6% of samples outside.

    Same distribution as nn.init.trunc_normal_, several times faster on CPU
    (no erfinv), which matters for multi-billion-parameter models.
    """
    flat = t.view(-1)
    flat.normal_()
    idx = (flat.abs() > 2.0).nonzero().squeeze(1)
    while idx.numel():
        redrawn = torch.randn(idx.numel(), dtype=t.dtype, device=t.device)
        flat[idx] = redrawn
        idx = idx[redrawn.abs() > 2.0]
    return t.mul_(std)


@torch.no_grad()
def init_weights(model: nn.Module, config: BTLMConfig) -> None:
    sigma = config.initializer_range
    hidden_std = sigma * math.sqrt(config.mup_width_scale)
    proj_std = hidden_std / math.sqrt(2 * config.n_layer)
    for name, p in model.named_parameters():
        kind = classify(name, p)
        if kind == "embeddings":
            trunc_normal_(p, sigma)
        elif kind == "hidden":
            trunc_normal_(p, proj_std if name.endswith(OUTPUT_PROJ_SUFFIXES) else hidden_std)
        elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
            p.fill_(1.0)
        else:
            p.zero_()


def param_groups(model: nn.Module, config: BTLMConfig, lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups; each carries ``lr_scale`` so a schedule can set lr = base_lr_now * lr_scale."""
    scales = {"hidden": config.mup_width_scale, "embeddings": 1.0, "no_decay": 1.0}
    decay = {"hidden": weight_decay, "embeddings": weight_decay, "no_decay": 0.0}
    members: dict[str, list] = {k: [] for k in scales}
    for name, p in model.named_parameters():  # tied weights appear once
        if p.requires_grad:
            members[classify(name, p)].append(p)
    return [
        {"name": kind, "params": params, "lr": lr * scales[kind], "lr_scale": scales[kind], "weight_decay": decay[kind]}
        for kind, params in members.items()
        if params
    ]
