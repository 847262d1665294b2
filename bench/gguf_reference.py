"""The PyTorch side of bench/gguf_check.py: reference logits, greedy tokens and perplexity in fp32.

Also builds the full-size model with random (muP-initialized) weights and writes it as a
sharded checkpoint, one block per shard, so the exporter can stream it. Random weights are
enough for what the full-size run measures (memory, file size, numerical agreement at full
shapes); their perplexity is that of an untrained model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from common.atomic import atomic_dir, write_json
from model import BTLMConfig, BTLMLMHeadModel
from model.checkpoint.published import CONFIG_NAME, INDEX_NAME, to_published

# One prompt per kind of text in the sample corpus (code, licenses, manual pages, docs).
PROMPTS = [
    "import os\nimport sys\n\ndef main():\n",
    "Permission is hereby granted, free of charge, to any person obtaining a copy",
    "NAME\n       ls - list directory contents\n\nSYNOPSIS\n",
    "This package provides a library for reading and writing",
]


def validation_rows(tokens_dir: Path, n_rows: int, seq_len: int) -> np.ndarray:
    """The first ``n_rows`` rows of the packed validation shards, cut to ``seq_len`` tokens."""
    shards = sorted(Path(tokens_dir).glob("shard-*.arrow"))
    if not shards:
        raise SystemExit(f"{tokens_dir}: no shard-*.arrow (run `make tokenize`, or pass --tokens)")
    rows = []
    for shard in shards:
        table = pa.ipc.open_file(pa.memory_map(str(shard))).read_all()
        column = table.column("input_ids").combine_chunks()
        width = column.type.list_size
        values = column.flatten().to_numpy().reshape(-1, width)
        rows.extend(values[: n_rows - len(rows), :seq_len].astype(np.int64))
        if len(rows) >= n_rows:
            break
    if len(rows) < n_rows:
        raise SystemExit(f"{tokens_dir}: only {len(rows)} rows, {n_rows} asked")
    return np.stack(rows)


@torch.no_grad()
def reference(model: BTLMLMHeadModel, prompts: list[list[int]], rows: np.ndarray, new_tokens: int, out: Path) -> dict:
    """Write the fp32 reference (logits per prompt, greedy continuations, perplexity) under ``out``."""
    model.eval()
    logits, greedy = {}, []
    for i, ids in enumerate(prompts):
        x = torch.tensor([ids])
        logits[f"prompt{i}"] = model(x).logits[0].float().numpy()
        greedy.append(model.generate(x, new_tokens, temperature=0)[0, len(ids):].tolist())
    np.savez(out / "reference-logits.npz", **logits)
    losses = [model(torch.from_numpy(r)[None], labels=torch.from_numpy(r)[None], return_logits=False).loss.item()
              for r in rows]
    result = {"greedy": greedy, "perplexity": math.exp(sum(losses) / len(losses)), "rows": len(rows),
              "row_tokens": int(rows.shape[1]), "parameters": model.num_parameters()}
    write_json(out / "reference.json", result)
    return result


def random_model(config_path: Path, seed: int) -> BTLMLMHeadModel:
    """A muP-initialized model of ``config_path``; the same seed gives the same weights."""
    config = BTLMConfig.from_yaml(config_path)
    torch.manual_seed(seed)
    return BTLMLMHeadModel(config).eval()


def same_weights(model: BTLMLMHeadModel, checkpoint: Path) -> bool:
    """Whether ``model`` is the one saved in ``checkpoint`` (checked on two tensors, read from their shards)."""
    index = json.loads((checkpoint / INDEX_NAME).read_text())["weight_map"]
    state = model.state_dict()
    for name in ("transformer.wte.weight", "transformer.h.0.mlp.c_fc.weight"):
        with safe_open(str(checkpoint / index[name]), framework="pt") as f:
            saved = f.get_tensor(name)
        if not torch.equal(saved, to_published({name: state[name]}, model.config)[name]):
            return False
    return True


def random_checkpoint(config_path: Path, out: Path, seed: int) -> BTLMLMHeadModel:
    """A muP-initialized model of ``config_path`` written as a sharded checkpoint (one block per shard)."""
    model = random_model(config_path, seed)
    config = model.config
    state = model.state_dict()
    groups: dict[str, list[str]] = {}
    for name in state:
        part = name.split(".")[2] if name.startswith("transformer.h.") else "rest"
        groups.setdefault(part, []).append(name)
    weight_map = {}
    with atomic_dir(out) as tmp:
        for part, names in groups.items():
            shard = f"model-{part}.safetensors"
            tensors = to_published({n: state[n] for n in names}, config)
            save_file(tensors, str(tmp / shard), metadata={"format": "pt"})
            weight_map.update({n: shard for n in tensors})
            del tensors
        (tmp / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
        config.to_json(tmp / CONFIG_NAME)
    return model
