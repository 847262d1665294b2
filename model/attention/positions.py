"""Position information: ALiBi attention biases and rotary embeddings.

Both are relative, so they take the number of cached positions (``past_len``) to stay
right during cached generation. The ALiBi bias of a training step is the same for all
layers and steps, so it is built once per (length, device, dtype) and reused.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
from torch import nn


def alibi_slopes(n_head: int) -> list[float]:
    """The standard ALiBi slopes (Press et al.): geometric for powers of two, else interleaved."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (k + 1) for k in range(n)]

    if math.log2(n_head).is_integer():
        return power_of_two(n_head)
    closest = 2 ** math.floor(math.log2(n_head))
    return power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_head - closest]


def alibi_distance_scale(alibi_scaling: dict[str, Any] | None, key_len: int) -> float:
    """Linear ALiBi scaling: distances are divided by this factor.

    With ``train_seq_len`` the factor follows the current key length (as in the published
    BTLM code), so during cached generation past the training length the cached keys of
    deeper layers were computed under an earlier factor; a fixed ``factor`` has no such drift.
    """
    if alibi_scaling is None:
        return 1.0
    if alibi_scaling.get("factor") is not None:
        return float(alibi_scaling["factor"])
    train_len = alibi_scaling["train_seq_len"]
    return key_len / train_len if key_len > train_len else 1.0


class AlibiBias(nn.Module):
    """Holds the slopes (saved as ``transformer.relative_pe.slopes``, shape [n_head, 1])."""

    MAX_CACHED = 2

    def __init__(self, n_head: int, alibi_scaling: dict[str, Any] | None) -> None:
        super().__init__()
        self.n_head = n_head
        self.alibi_scaling = alibi_scaling
        self.register_buffer("slopes", torch.empty(n_head, 1))
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.reset_slopes()

    @torch.no_grad()
    def reset_slopes(self) -> None:
        if self.slopes.device.type != "meta":
            self.slopes.copy_(torch.tensor(alibi_slopes(self.n_head)).unsqueeze(-1))

    def scaled_slopes(self, key_len: int) -> torch.Tensor:
        """Per-head slopes [n_head] with the distance scaling at this key length folded in."""
        return self.slopes.float().flatten() / alibi_distance_scale(self.alibi_scaling, key_len)

    def bias(self, q_len: int, past_len: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask [1, n_head, q_len, past_len + q_len]: ALiBi, -inf above the diagonal."""
        # Tensors made under inference_mode cannot be saved for backward later: separate entries.
        key = (q_len, past_len, self.slopes.device, dtype, self.slopes._version, self.slopes.data_ptr(),
               torch.is_inference_mode_enabled())
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        out = self._build(q_len, past_len, dtype)
        if past_len == 0:  # training shapes repeat; decode steps do not
            self._cache[key] = out
            while len(self._cache) > self.MAX_CACHED:
                self._cache.popitem(last=False)
        return out

    @torch.no_grad()
    def _build(self, q_len: int, past_len: int, dtype: torch.dtype) -> torch.Tensor:
        # Filled head by head, in place: at 8k tokens one [n_head, T, T] tensor is ~1 GB in fp32.
        device = self.slopes.device
        key_len = past_len + q_len
        q_pos = torch.arange(past_len, key_len, device=device, dtype=torch.float32)[:, None]
        distance = q_pos - torch.arange(key_len, device=device, dtype=torch.float32)[None, :]
        future = distance < 0
        scale = alibi_distance_scale(self.alibi_scaling, key_len)
        out = torch.empty(1, self.n_head, q_len, key_len, device=device, dtype=dtype)
        for h, slope in enumerate(self.slopes.float().flatten().tolist()):
            out[0, h].copy_(distance * (-slope / scale)).masked_fill_(future, float("-inf"))
        return out

    def _apply(self, fn, recurse=True):  # device/dtype moves invalidate cached biases
        self._cache.clear()
        return super()._apply(fn, recurse)


class Rotary(nn.Module):
    """Rotary embeddings (GPT-NeoX style, rotate-half) on the first ``rotary_dim`` dims of a head."""

    def __init__(self, rotary_dim: int, base: float) -> None:
        super().__init__()
        self.rotary_dim = rotary_dim
        self.base = base  # frequencies are recomputed in fp32 (cheap), never stored in bf16
        self._cache: tuple | None = None

    def cos_sin(self, past_len: int, q_len: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [q_len, rotary_dim] for positions past_len .. past_len + q_len - 1."""
        key = (past_len, q_len, device, dtype, torch.is_inference_mode_enabled())
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        positions = torch.arange(past_len, past_len + q_len, device=device, dtype=torch.float32)
        d = self.rotary_dim
        inv_freq = 1.0 / (self.base ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
        freqs = positions[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
        self._cache = (key, cos, sin)
        return cos, sin

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate x [B, H, T, D] by position; dims beyond rotary_dim pass through."""
        rd = self.rotary_dim
        x_rot, x_pass = x[..., :rd], x[..., rd:]
        half = rd // 2
        rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
        x_rot = x_rot * cos + rotated * sin
        return torch.cat((x_rot, x_pass), dim=-1) if x_pass.shape[-1] else x_rot

    def _apply(self, fn, recurse=True):
        self._cache = None
        return super()._apply(fn, recurse)
