"""dtype helpers shared by the attention and loss code."""

from __future__ import annotations

import torch


def compute_dtype(device: torch.device, fallback: torch.dtype) -> torch.dtype:
    """The matmul dtype autocast would use here (bf16 under CPU autocast), else the tensor's own."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return fallback
