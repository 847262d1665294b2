"""The published BTLM checkpoint layout <-> the project's state dict (``to_published`` / ``from_published``).

The published layout stores linear weights GPT-2 "Conv1D" style, shape [in, out]
(y = x @ W + b), with Q|K|V concatenated in ``c_attn``; the tied ``lm_head.weight`` is
left out and ``transformer.relative_pe.slopes`` is included. The file names of a folder
and of its remote code are the published ones too.
"""

from __future__ import annotations

from typing import Any

import torch

from model.config import BTLMConfig

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
SHARD_PATTERN = "model-{index:05d}-of-{count:05d}.safetensors"
# Remote code of an exported folder: the published BTLM's file names, our classes.
CONFIG_MODULE = "configuration_btlm"
MODELING_MODULE = "modeling_btlm"
AUTO_MAP = {"AutoConfig": f"{CONFIG_MODULE}.BTLMHFConfig", "AutoModelForCausalLM": f"{MODELING_MODULE}.BTLMForCausalLM"}
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_fc2.weight", "mlp.c_proj.weight")


class CheckpointError(ValueError):
    """A checkpoint directory is missing files or holds tensors that do not fit the config."""


def to_published(state: dict[str, torch.Tensor], config: BTLMConfig) -> dict[str, torch.Tensor]:
    """Native state dict -> published names and layout."""
    out = {}
    for name, t in state.items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        if name.endswith(CONV1D_SUFFIXES):
            t = t.t()
        out[name] = t.detach().contiguous()
    return out


def from_published(state: dict[str, torch.Tensor], config: BTLMConfig, where: str) -> dict[str, torch.Tensor]:
    """Published names and layout -> native state dict (slopes / lm_head handled by the caller)."""
    out = {}
    for name, t in state.items():
        if name.endswith(CONV1D_SUFFIXES):
            if t.ndim != 2:
                raise CheckpointError(f"{where}: {name} should be 2-D, got shape {tuple(t.shape)}")
            t = t.t()
        out[name] = t
    if config.tie_word_embeddings and "lm_head.weight" in out:
        lm, wte = out.pop("lm_head.weight"), out.get("transformer.wte.weight")
        if wte is not None and not torch.equal(lm.to(wte.dtype), wte):
            raise CheckpointError(f"{where}: tie_word_embeddings is true but lm_head.weight differs from transformer.wte.weight")
    return out


def generation_config(config: BTLMConfig) -> dict[str, Any]:
    """generation_config.json: the special tokens; pad = eos (GPT-2 has no pad token)."""
    return {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
            "pad_token_id": config.eos_token_id, "_from_model_config": True}
