"""The BTLM network in one place: GPT-2 layout, pre-LN blocks, SwiGLU MLP, ALiBi / rotary / learned positions.

    BTLMLMHeadModel            the model: ``transformer`` + ``lm_head``, loss, muP groups, checkpoints, generation
    `-- BTLMTransformer        the decoder trunk (``transformer.``): embeddings, blocks, final LayerNorm
        `-- BTLMBlock          x + attn(ln_1(x)), then x + mlp(ln_2(x))
            |-- BTLMAttention  fused QKV, rotary (if any), ``attend`` (model/attention/), c_proj
            `-- BTLMMLP        SwiGLU (c_fc * silu(c_fc2)) or GELU, c_proj

Every multiplier comes from the config (``attention_scale``, ``embedding_scale``,
``output_logits_scale``). Module and parameter names follow the Hugging Face BTLM
checkpoint (``transformer.wte``, ``transformer.h.{i}.attn.c_attn`` ...), so forward hooks
and the checkpoint converter can address them directly. Linears are ``nn.Linear``
([out, in]); model/checkpoint/ converts to and from the GPT-2 Conv1D layout ([in, out]).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model import generation, mup
from model.attention import AttentionContext, attend, attention_context
from model.attention.positions import AlibiBias, Rotary
from model.checkpoint import folder
from model.config import BTLMConfig
from model.hardware import compute_dtype
from model.loss import chunked_lm_loss, lm_loss_from_logits

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class CausalLMOutput:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: KVCache | None = None


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
        self.scale = config.attention_scale
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
            q = rotary.rotate(q, *ctx.rotary)
            k = rotary.rotate(k, *ctx.rotary)
        if layer_past is not None:
            k = torch.cat((layer_past[0], k), dim=2)
            v = torch.cat((layer_past[1], v), dim=2)
        if presents is not None:
            presents.append((k, v))
        y = attend(q, k, v, ctx, self.scale, self.attn_pdrop if self.training else 0.0)
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


class BTLMTransformer(nn.Module):
    """The decoder trunk (the ``transformer.`` prefix): embeddings, blocks and the final LayerNorm; no output head."""

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
        x = x * self.config.embedding_scale
        x = self.drop(x)
        ctx = self.attention_context(T, past_len, segment_ids, x)
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

    def attention_context(self, T, past_len, segment_ids, x) -> AttentionContext:
        """What every layer's attention needs for this pass (the kernel choice: model/attention/dispatch.py)."""
        dtype = compute_dtype(x.device, x.dtype)
        rotary = self.rotary_emb.cos_sin(past_len, T, x.device, dtype) if self.rotary_emb is not None else None
        dropout = self.training and self.config.attn_pdrop > 0
        return attention_context(T, past_len, segment_ids, self.relative_pe, rotary, dtype, x.device, dropout)


class BTLMLMHeadModel(nn.Module):
    """The model: the decoder trunk plus its output head, loss, muP groups, checkpoints and generation."""

    def __init__(self, config: BTLMConfig, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.transformer = BTLMTransformer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.tie_weights()
        if init and self.lm_head.weight.device.type != "meta":
            mup.init_weights(self, config)

    @property
    def output_logits_scale(self) -> float:
        return self.config.output_logits_scale

    def tie_weights(self) -> None:
        self.lm_head.weight = self.transformer.wte.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        return_logits: bool = True,
    ) -> CausalLMOutput:
        """``labels`` as in Hugging Face: same shape as input_ids, -100 ignored, shifted here.

        With ``return_logits=False`` the loss is computed chunk by chunk and the full
        [B, T, vocab] logits are never built.
        """
        hidden, presents = self.transformer(input_ids, segment_ids, past_key_values, use_cache)
        loss = logits = None
        if return_logits or labels is None:
            # Scaling the [B, T, d] input is the same as scaling the [B, T, vocab] output, and cheaper.
            scaled = hidden if self.output_logits_scale == 1.0 else hidden * self.output_logits_scale
            logits = self.lm_head(scaled)
            if labels is not None:
                loss = lm_loss_from_logits(logits, labels)
        else:
            loss = chunked_lm_loss(hidden, self.lm_head.weight, labels, self.output_logits_scale)
        return CausalLMOutput(loss=loss, logits=logits, past_key_values=presents)

    # --- muP and accounting -------------------------------------------------------

    def get_mup_param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        return mup.param_groups(self, self.config, lr, weight_decay)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct trainable parameters; exclude_embeddings drops the input token and position tables."""
        skip = {"transformer.wte.weight", "transformer.wpe.weight"} if exclude_embeddings else set()
        return sum(p.numel() for name, p in self.named_parameters() if name not in skip)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 x (matmul parameters) + attention (PaLM appendix B / nanoGPT).

        Matmul parameters are all but the embedding lookups, plus the output projection
        (which is wte again when tied). The attention term counts full, unmasked QK^T and
        AV: 12 * n_layer * n_embd * seq_len.
        """
        c = self.config
        matmul_params = self.num_parameters(exclude_embeddings=True)
        if c.tie_word_embeddings:
            matmul_params += c.vocab_size * c.n_embd
        return 6.0 * matmul_params + 12.0 * c.n_layer * c.n_embd * seq_len

    # --- checkpoints and generation ---------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike):
        return folder.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> "BTLMLMHeadModel":
        return folder.load_pretrained(cls, directory, map_location, dtype)

    generate = generation.generate  # model.generate(input_ids, max_new_tokens, ...) = generate(model, ...)
