"""BTLMLMHeadModel: the network plus its output head, loss, muP groups, checkpoints and generation."""

from __future__ import annotations

import os

import torch
from torch import nn

from model import generation, hf_checkpoint, mup
from model.config import BTLMConfig
from model.loss import chunked_lm_loss, lm_loss_from_logits
from model.modeling import BTLMModel, CausalLMOutput, KVCache


class BTLMLMHeadModel(nn.Module):
    def __init__(self, config: BTLMConfig, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.transformer = BTLMModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.tie_weights()
        # muP readout multiplier; 1 under standard parameterization.
        self.output_logits_scale = config.mup_output_alpha * config.mup_width_scale
        if init and self.lm_head.weight.device.type != "meta":
            mup.init_weights(self, config)

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
        return hf_checkpoint.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> "BTLMLMHeadModel":
        return hf_checkpoint.load_pretrained(cls, directory, map_location, dtype)

    generate = generation.generate  # model.generate(input_ids, max_new_tokens, ...) = generate(model, ...)
