"""Attention: one call (``attend``) over the kernels that compute it.

- ``dispatch.py``: ``AttentionContext``, ``choose_kernel`` (its docstring is the table of
  cases), ``attention_context`` and ``attend``; the explicit-mask reference path.
- ``sdpa.py``: mask-free ALiBi on SDPA's kernels, and per-document attention.
- ``flex.py``: FlexAttention (the CUDA path).
- ``positions.py``: ALiBi slopes and biases, rotary embeddings.
"""

from model.attention.dispatch import AttentionContext, attend, attention_context, choose_kernel

__all__ = ["AttentionContext", "attend", "attention_context", "choose_kernel"]
