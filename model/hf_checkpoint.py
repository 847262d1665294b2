"""Hugging Face BTLM checkpoint format: config.json + model.safetensors (no pickle).

The published layout stores linear weights GPT-2 "Conv1D" style, shape [in, out]
(y = x @ W + b), with Q|K|V concatenated in ``c_attn``; the tied ``lm_head.weight`` is
left out and ``transformer.relative_pe.slopes`` is included. Loading also accepts a
checkpoint without the slopes buffer (they are a pure function of n_head), with an
explicit ``lm_head.weight``, or sharded (``model.safetensors.index.json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.config import BTLMConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
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


def save_pretrained(model, directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = to_published(model.state_dict(), model.config)
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, directory / WEIGHTS_NAME)
    model.config.to_json(directory / CONFIG_NAME)  # last: a directory with config.json is complete
    return directory


def read_tensors(directory: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    single, index = directory / WEIGHTS_NAME, directory / INDEX_NAME
    if single.exists():
        return load_file(str(single), device=str(device))
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(directory / shard), device=str(device)))
        return state
    others = sorted(p.name for p in directory.glob("*.bin"))
    hint = f" (found {', '.join(others)}: pickle files are not loaded; convert them to safetensors)" if others else ""
    raise CheckpointError(f"{directory}: no {WEIGHTS_NAME} or {INDEX_NAME}{hint}")


def load_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    directory = Path(directory)
    config = BTLMConfig.from_json(directory / CONFIG_NAME)
    state = from_published(read_tensors(directory, map_location), config, str(directory))
    with torch.device("meta"):
        model = cls(config, init=False)
    expected = model.state_dict()
    if "transformer.relative_pe.slopes" in expected and "transformer.relative_pe.slopes" not in state:
        state["transformer.relative_pe.slopes"] = None  # keep the computed default, filled below
    required = set(expected) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
    missing = sorted(required - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{directory}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")
    for name, t in state.items():
        if t is not None and tuple(t.shape) != tuple(expected[name].shape):
            got, want = tuple(t.shape), tuple(expected[name].shape)
            if name.endswith(CONV1D_SUFFIXES):  # report in the file's [in, out] layout
                got, want = got[::-1], want[::-1]
            raise CheckpointError(f"{directory}: {name} has shape {got}, config expects {want}")
    model = model.to_empty(device=map_location).to(dtype or torch.float32)
    if config.tie_word_embeddings:
        model.tie_weights()  # to_empty makes fresh tensors, which unties them
    with torch.no_grad():
        named = dict(model.named_parameters())
        named.update(dict(model.named_buffers()))
        for name, t in state.items():
            if t is None:
                model.transformer.relative_pe.reset_slopes()
            else:
                named[name].copy_(t.to(named[name].dtype))
    return model
