"""Hugging Face checkpoint folders: config.json + safetensors (no pickle), BTLM or StableLM.

Saving writes the published BTLM layout (``published.py``), ``generation_config.json`` too,
and shards above ``max_shard_bytes``. Loading also accepts a checkpoint without the slopes
buffer (they are a pure function of n_head), with an explicit ``lm_head.weight``, in bf16,
sharded (``model.safetensors.index.json``), the published ``config.json`` (``auto_map`` and
all), or transformers' native StableLM layout (``model_type: stablelm``, model/stablelm/).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from common.atomic import atomic_path, write_json
from model.checkpoint.published import (
    CONFIG_NAME,
    CONV1D_SUFFIXES,
    GENERATION_CONFIG_NAME,
    INDEX_NAME,
    SHARD_PATTERN,
    WEIGHTS_NAME,
    CheckpointError,
    from_published,
    generation_config,
    to_published,
)
from model.config import BTLMConfig, read_json_object
from model.stablelm.layout import StableLMFormatError, config_from_stablelm, state_from_stablelm

# --- writing ----------------------------------------------------------------------------


def shard_plan(tensors: dict[str, torch.Tensor], max_shard_bytes: int | None) -> list[list[str]]:
    """Tensor names per file, in name order; a new file starts when the next tensor would
    push the current one past ``max_shard_bytes`` (a larger single tensor gets a file of its own)."""
    names = sorted(tensors)
    if max_shard_bytes is None:
        return [names]
    shards: list[list[str]] = [[]]
    size = 0
    for name in names:
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_weights(directory: Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int | None = None) -> list[str]:
    """One ``model.safetensors`` or numbered shards + ``model.safetensors.index.json``.

    Weight files of an earlier save that the new one does not use are removed, so a
    stale single file can never shadow a newer sharded save (or the reverse). Returns
    the names written.
    """
    plan = shard_plan(tensors, max_shard_bytes)
    names = [WEIGHTS_NAME] if len(plan) == 1 else [SHARD_PATTERN.format(index=i + 1, count=len(plan)) for i in range(len(plan))]
    for file_name, keys in zip(names, plan):
        with atomic_path(directory / file_name) as tmp:
            save_file({k: tensors[k] for k in keys}, str(tmp), metadata={"format": "pt"})
    if len(plan) > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map = {key: file_name for file_name, keys in zip(names, plan) for key in keys}
        write_json(directory / INDEX_NAME, {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    keep = set(names) | ({INDEX_NAME} if len(plan) > 1 else set())
    for old in [directory / WEIGHTS_NAME, directory / INDEX_NAME, *directory.glob("model-*-of-*.safetensors")]:
        if old.name not in keep and old.exists():
            old.unlink()
    return names


def save_pretrained(model, directory: str | os.PathLike, max_shard_bytes: int | None = None,
                    extra_config: dict[str, Any] | None = None) -> Path:
    """Write the published BTLM layout; ``extra_config`` adds keys to config.json (e.g. ``auto_map``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_weights(directory, to_published(model.state_dict(), model.config), max_shard_bytes)
    write_json(directory / GENERATION_CONFIG_NAME, generation_config(model.config), indent=2)
    data = {**model.config.to_hf_dict(), **(extra_config or {})}
    write_json(directory / CONFIG_NAME, data, indent=2)  # last: a directory with config.json is complete
    return directory


def parse_size(size: int | str | None) -> int | None:
    """Bytes of ``"5GB"``, ``"500MB"``, ``"2GiB"`` or an int (transformers' max_shard_size)."""
    if size is None or isinstance(size, int):
        return size
    text = str(size).strip().upper()
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9,
             "TB": 10**12, "B": 1}
    for unit, factor in units.items():
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * factor)
            except ValueError:
                break
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"size {size!r} is not a number of bytes or like '5GB' / '500MB'") from None


# --- reading ----------------------------------------------------------------------------


def weight_files(directory: Path) -> list[Path]:
    single, index = directory / WEIGHTS_NAME, directory / INDEX_NAME
    if single.exists():
        return [single]
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index (needs a 'weight_map' object): {exc}") from None
        shards = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [p.name for p in shards if not p.exists()]
        if missing:
            raise CheckpointError(f"{index} names shards that do not exist: {', '.join(missing)}")
        return shards
    others = sorted(p.name for p in directory.glob("*.bin"))
    hint = f" (found {', '.join(others)}: pickle files are not loaded; convert them to safetensors)" if others else ""
    raise CheckpointError(f"{directory}: no {WEIGHTS_NAME} or {INDEX_NAME}{hint}")


def read_tensors(directory: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(Path(directory)):
        state.update(load_file(str(path), device=str(device)))
    return state


def stored_dtype(directory: Path) -> torch.dtype:
    """The dtype the weights are stored in (``dtype="auto"``): that of the first floating tensor."""
    with safe_open(str(weight_files(Path(directory))[0]), framework="pt") as f:
        for key in f.keys():
            t = f.get_slice(key)
            dtype = getattr(torch, {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}.get(t.get_dtype(), ""), None)
            if isinstance(dtype, torch.dtype):
                return dtype
    return torch.float32


def read_config_dict(directory: Path) -> dict[str, Any]:
    return read_json_object(directory / CONFIG_NAME)


def read_config(directory: str | os.PathLike) -> BTLMConfig:
    """The model config of a BTLM or native StableLM folder."""
    directory = Path(directory)
    if read_config_dict(directory).get("model_type") == "stablelm":
        return config_from_stablelm(read_config_dict(directory), str(directory / CONFIG_NAME))
    return BTLMConfig.from_json(directory / CONFIG_NAME)


def read_native_state(directory: Path, config: BTLMConfig, device: str | torch.device) -> dict[str, torch.Tensor]:
    """The folder's tensors under the native names and layout."""
    tensors = read_tensors(directory, device)
    if read_config_dict(directory).get("model_type") == "stablelm":
        try:
            return state_from_stablelm(tensors, config, str(directory))
        except StableLMFormatError as exc:
            raise CheckpointError(str(exc)) from None
    return from_published(tensors, config, str(directory))


def load_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu",
                    dtype: torch.dtype | str | None = None, config: BTLMConfig | None = None):
    """Build ``cls(config, init=False)`` and fill it from the folder.

    ``dtype``: None = float32, ``"auto"`` = as stored, or a torch dtype. ``config``
    replaces the folder's config.json (its tensors must still fit it).
    """
    directory = Path(directory)
    config = config or read_config(directory)
    if dtype == "auto":
        dtype = stored_dtype(directory)
    state = read_native_state(directory, config, map_location)
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
