"""The BTLM network: GPT-2 layout, pre-LN blocks, SwiGLU MLP, ALiBi / rotary / learned positions.

Module and parameter names follow the Hugging Face BTLM checkpoint
(``transformer.wte``, ``transformer.h.{i}.attn.c_attn`` ...), so forward hooks and the
checkpoint converter can address them directly. Linears are ``nn.Linear`` ([out, in]);
hf_checkpoint.py converts to and from the GPT-2 Conv1D layout ([in, out]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model import flex_attention
from model.attention import alibi_causal_attention, document_attention, document_spans, use_fused_alibi
from model.config import BTLMConfig
from model.positions import AlibiBias, Rotary
from model.precision import compute_dtype

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class CausalLMOutput:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: KVCache | None = None


@dataclass
class AttentionContext:
    """What every layer's attention needs, computed once per forward pass."""

    mask: torch.Tensor | None  # additive float or boolean (True = attend); None = no mask
    is_causal: bool
    cos: torch.Tensor | None = None
    sin: torch.Tensor | None = None
    # "sdpa": SDPA with ``mask`` / ``is_causal``; "alibi": causal ALiBi without a mask; "documents":
    # attention within each segment (attention.py); "flex": FlexAttention with ``block_mask`` (CUDA).
    kernel: str = "sdpa"
    alibi_slopes: torch.Tensor | None = None  # [n_head], distance scaling included
    past_len: int = 0
    document_spans: list[list[int]] | None = None  # per row: segment starts + [T] (the "documents" kernel)
    block_mask: object | None = None


class BTLMAttention(nn.Module):
    def __init__(self, config: BTLMConfig, rotary: Rotary | None) -> None:
        super().__init__()
        d = config.n_embd
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.c_attn = nn.Linear(d, 3 * d, bias=config.use_bias)
        self.c_proj = nn.Linear(d, d, bias=config.use_bias)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        if not config.scale_attn_weights:
            self.scale = 1.0
        elif config.mup_scale_qk_dot_by_d:  # muP: 1/d_head keeps attention logits O(1) as heads widen
            self.scale = 1.0 / self.head_dim
        else:
            self.scale = self.head_dim**-0.5
        self._rotary = [rotary]  # a list, so the shared module is not registered once per layer

    def forward(
        self,
        x: torch.Tensor,
        ctx: AttentionContext,
        layer_past: tuple[torch.Tensor, torch.Tensor] | None = None,
        presents: KVCache | None = None,
    ) -> torch.Tensor:
        """Attention output [B, T, C]; with ``presents`` given, appends this layer's (k, v) to it.

        Returning a plain tensor keeps forward hooks on ``attn`` simple (coordinate checks).
        """
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        rotary = self._rotary[0]
        if rotary is not None:
            q = rotary.rotate(q, ctx.cos, ctx.sin)
            k = rotary.rotate(k, ctx.cos, ctx.sin)
        if layer_past is not None:
            k = torch.cat((layer_past[0], k), dim=2)
            v = torch.cat((layer_past[1], v), dim=2)
        if presents is not None:
            presents.append((k, v))
        dropout_p = self.attn_pdrop if self.training else 0.0
        if ctx.kernel == "alibi":
            y = alibi_causal_attention(q, k, v, ctx.alibi_slopes, self.scale, dropout_p, ctx.past_len)
        elif ctx.kernel == "documents":
            y = document_attention(q, k, v, ctx.document_spans, ctx.alibi_slopes, self.scale, dropout_p)
        elif ctx.kernel == "flex":
            y = flex_attention.flex_attention(q, k, v, ctx.alibi_slopes, self.scale, ctx.block_mask)
        else:
            mask = ctx.mask
            if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
                mask = mask.to(q.dtype)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=ctx.is_causal, scale=self.scale
            )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class BTLMMLP(nn.Module):
    def __init__(self, config: BTLMConfig) -> None:
        super().__init__()
        d, inner, bias = config.n_embd, config.n_inner, config.use_bias
        self.swiglu = config.activation_function == "swiglu"
        self.c_fc = nn.Linear(d, inner, bias=bias)
        if self.swiglu:
            self.c_fc2 = nn.Linear(d, inner, bias=bias)
        self.c_proj = nn.Linear(inner, d, bias=bias)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            h = self.c_fc(x) * F.silu(self.c_fc2(x))
        else:
            h = F.gelu(self.c_fc(x), approximate="tanh")
        return self.dropout(self.c_proj(h))


class BTLMBlock(nn.Module):
    def __init__(self, config: BTLMConfig, rotary: Rotary | None) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = BTLMAttention(config, rotary)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = BTLMMLP(config)

    def forward(self, x, ctx, layer_past=None, presents=None):
        x = x + self.attn(self.ln_1(x), ctx, layer_past, presents)
        return x + self.mlp(self.ln_2(x))


class BTLMModel(nn.Module):
    """Embeddings, blocks and the final LayerNorm (the ``transformer.`` prefix)."""

    def __init__(self, config: BTLMConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        pe = config.position_embedding_type
        self.wpe = nn.Embedding(config.n_positions, config.n_embd) if pe == "learned" else None
        self.relative_pe = AlibiBias(config.n_head, config.alibi_scaling) if pe == "alibi" else None
        self.rotary_emb = Rotary(config.rotary_dim, config.rotary_base) if pe == "rope" else None
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(BTLMBlock(config, self.rotary_emb) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(
        self,
        input_ids: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, KVCache | None]:
        B, T = input_ids.shape
        past_len = past_key_values[0][0].shape[2] if past_key_values else 0
        if segment_ids is not None and past_len:
            raise ValueError("segment_ids cannot be combined with past_key_values")
        x = self.wte(input_ids)
        if self.wpe is not None:
            if past_len + T > self.config.n_positions:
                raise ValueError(f"sequence of {past_len + T} tokens exceeds n_positions={self.config.n_positions}")
            x = x + self.wpe(self._absolute_positions(B, T, past_len, segment_ids, input_ids.device))
        x = x * self.config.mup_embeddings_scale
        x = self.drop(x)
        ctx = self._attention_context(T, past_len, segment_ids, x)
        presents: KVCache | None = [] if use_cache else None
        for i, block in enumerate(self.h):
            x = block(x, ctx, past_key_values[i] if past_key_values else None, presents)
        return self.ln_f(x), presents

    @staticmethod
    def _absolute_positions(B, T, past_len, segment_ids, device) -> torch.Tensor:
        pos = torch.arange(past_len, past_len + T, device=device).expand(B, T)
        if segment_ids is None:
            return pos
        # Restart at 0 at each segment boundary (per-document positions).
        starts = torch.ones_like(segment_ids, dtype=torch.bool)
        starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
        start_pos = torch.where(starts, pos, torch.zeros_like(pos)).cummax(dim=1).values
        return pos - start_pos

    def _attention_context(self, T, past_len, segment_ids, x) -> AttentionContext:
        """Picks the kernel: FlexAttention on CUDA, mask-free SDPA paths on CPU, explicit masks for short inputs."""
        dtype = compute_dtype(x.device, x.dtype)
        cos = sin = None
        if self.rotary_emb is not None:
            cos, sin = self.rotary_emb.cos_sin(past_len, T, x.device, dtype)
        alibi = self.relative_pe is not None
        slopes = self.relative_pe.scaled_slopes(past_len + T) if alibi else None
        has_dropout = self.training and self.config.attn_pdrop > 0
        if (alibi or segment_ids is not None) and past_len == 0 and T > 1 and not has_dropout \
                and flex_attention.available(x.device):
            mask = flex_attention.block_mask(T, T, x.device, segment_ids)
            return AttentionContext(None, False, cos, sin, "flex", slopes, block_mask=mask)
        if alibi and use_fused_alibi(T, segment_ids is not None):
            return AttentionContext(None, False, cos, sin, "alibi", slopes, past_len)
        if segment_ids is not None:
            return AttentionContext(None, False, cos, sin, "documents", slopes,
                                    document_spans=document_spans(segment_ids))
        if alibi:
            mask = self.relative_pe.bias(T, past_len, dtype)  # ALiBi + causal, [1, H, T, past+T]
        elif past_len == 0:
            return AttentionContext(None, True, cos, sin)  # plain causal: SDPA's fast path
        elif T == 1:
            return AttentionContext(None, False, cos, sin)  # one new query sees the whole cache
        else:
            q_pos = torch.arange(past_len, past_len + T, device=x.device)[:, None]
            mask = torch.arange(past_len + T, device=x.device)[None, :] <= q_pos  # boolean, True = attend
            mask = mask[None, None]
        return AttentionContext(mask, False, cos, sin)
