"""Helpers for the transformers, export and lm-eval tests: tiny models on the project's GPT-2
vocabulary written as run checkpoints, token shards made with the project's tokenizer,
and subprocesses that either start fresh or cannot import the project at all."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from model import BTLMConfig, BTLMLMHeadModel
from model.checkpoint.tokenizer import file_sha256
from pipeline.shard_format import (
    FORMAT_VERSION,
    rows_table,
    shard_name,
    shard_schema,
    split_dir,
    write_manifest,
    write_shard,
)
from train.checkpoint import PROJECT_TOKENIZER, CheckpointWriter

REPO = Path(__file__).resolve().parents[2]
EOS = 50256
TEXTS = [
    "The history of the printing press begins in the fifteenth century, when movable type met paper.",
    "def add(a, b):\n    return a + b  # ünïcödé, tabs\tand  double  spaces\n",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software",
]


def tiny_config(kind: str = "alibi", **overrides) -> BTLMConfig:
    """A 2-layer, 64-wide muP model on the GPT-2 vocabulary: ALiBi (tied) or rotary (StableLM-like)."""
    fields = dict(vocab_size=50257, n_positions=256, n_embd=64, n_layer=2, n_head=4, n_inner=96,
                  initializer_range=0.073, mup_base_width=32, mup_embeddings_scale=14.6, mup_output_alpha=2.22,
                  mup_scale_qk_dot_by_d=True)
    if kind == "rope":
        fields.update(position_embedding_type="rope", rotary_pct=0.5, rotary_base=500.0, use_bias=False,
                      tie_word_embeddings=False)
    fields.update(overrides)
    return BTLMConfig(**fields)


def tiny_model(kind: str = "alibi", seed: int = 0, **overrides) -> BTLMLMHeadModel:
    """Randomly initialised, with LayerNorms and biases moved off their 1/0 init so every term counts."""
    torch.manual_seed(seed)
    model = BTLMLMHeadModel(tiny_config(kind, **overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def write_run_checkpoint(model: BTLMLMHeadModel, run_dir: Path, step: int = 1) -> Path:
    """A checkpoint folder as `make pretrain` writes it (CheckpointWriter), on the project's tokenizer."""
    writer = CheckpointWriter(run_dir / "checkpoints", keep_last=1, rank=0, world_size=1, barrier=lambda: None)
    state = {"step": step, "tokenizer_sha256": file_sha256(PROJECT_TOKENIZER), "config": {"sample": {"tokenizer": None}}}
    return writer.save(step, model, ({}, []), state)


def write_gpt2_shards(root: Path, texts: list[str], seq_len: int, split: str) -> Path:
    """Packed shards of ``texts`` tokenized with the project's tokenizer (EOS after each document)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(PROJECT_TOKENIZER))
    stream, starts = [], []
    for text in texts:
        starts.append(len(stream))
        stream += tok.encode(text).ids + [EOS]
    rows = len(stream) // seq_len
    ids = np.array(stream[: rows * seq_len], dtype=np.uint16).reshape(rows, seq_len)
    starts_arr = np.array(starts)
    doc_starts = [[int(s - r * seq_len) for s in starts_arr[(starts_arr >= r * seq_len) & (starts_arr < (r + 1) * seq_len)]]
                  for r in range(rows)]
    meta = {"format_version": FORMAT_VERSION, "tokenizer_sha256": file_sha256(PROJECT_TOKENIZER), "seq_len": seq_len,
            "eos_id": EOS, "vocab_size": 50257, "split": split, "config": "{}"}
    folder = split_dir(root, seq_len, split)
    table = rows_table(ids, [np.array(d) for d in doc_starts], ["test"] * rows, shard_schema(seq_len, meta))
    write_manifest(folder, {"shards": [write_shard(folder / shard_name(0), table, rows_per_batch=max(rows, 1))]})
    return root


def real_texts() -> list[str]:
    """Files of the project's own docs and code, one document each: real, varied text."""
    paths = sorted(REPO.glob("pipeline/**/*.py")) + sorted(REPO.glob("model/*.py")) + [REPO / "README.md"]
    return [p.read_text(encoding="utf-8") for p in paths if p.stat().st_size > 2000]


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / a.double().abs().max())


def run_fresh(script: str, spec: dict, cwd: Path = REPO, timeout: int = 600) -> dict:
    """Run ``script`` in a new Python process (the project importable); it prints one JSON line last."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(spec)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


ISOLATION_PRELUDE = """
import sys
sys.path[:0] = sys.argv[2].split(":")  # site-packages only: -S skipped them, and the project's .pth with them
import importlib.util
for name in ("model", "common", "train", "pipeline"):
    assert importlib.util.find_spec(name) is None, f"the project is importable ({name})"
"""


def run_isolated(script: str, spec: dict, cwd: Path, timeout: int = 600) -> dict:
    """Run ``script`` where the project cannot be imported: ``python -I -S`` (no user site, no
    .pth files: the editable install's finder is never installed), another working directory,
    sys.path = the interpreter's plus site-packages. Only installed packages are reachable."""
    packages = ":".join(site.getsitepackages())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false",
               HF_MODULES_CACHE=str(cwd / "hf_modules"))
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", ISOLATION_PRELUDE + script, json.dumps(spec), packages],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
