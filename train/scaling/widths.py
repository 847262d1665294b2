"""One base model at many widths: the family every width experiment trains."""

from __future__ import annotations

from typing import Any

from model import BTLMConfig


def width_config(base_model: str, width: int, head_dim: int, n_layer: int, n_inner_ratio: float,
                 overrides: dict[str, Any]) -> BTLMConfig:
    """The base model YAML at ``width`` with a parameterization's overrides applied.

    muP keeps the base file's mup_base_width, so mup_width_scale = base / width follows
    the width; standard parameterization sets every multiplier to 1 (see the YAML).
    """
    if width % head_dim:
        raise ValueError(f"width {width} is not a multiple of head_dim {head_dim}")
    shape = {"n_embd": width, "n_head": width // head_dim, "n_layer": n_layer,
             "n_inner": max(int(width * n_inner_ratio), 1)}
    return BTLMConfig.from_yaml(base_model, {**shape, **overrides})
