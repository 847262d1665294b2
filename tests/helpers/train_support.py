"""Helpers for the trainer tests: small packed shards in the exact shard contract, built
from real text (UTF-8 bytes as token ids, so a tiny model can learn them), and a tiny
training config derived from configs/train/demo.yaml."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.config import load_config
from pipeline.shard_format import (
    FORMAT_VERSION,
    rows_table,
    shard_name,
    shard_schema,
    split_dir,
    write_manifest,
    write_shard,
)

REPO = Path(__file__).resolve().parents[2]
EOS = 256  # byte ids 0..255, EOS after every document
VOCAB = 257
TOKENIZER_SHA = "0" * 63 + "b"


def real_documents() -> list[bytes]:
    """Paragraphs of the project's own prose and code: real, varied text."""
    docs = []
    for path in sorted(REPO.glob("pipeline/*.py")) + sorted(REPO.glob("train/*.py")):
        for para in path.read_text(encoding="utf-8").split("\n\n"):
            if len(para.strip()) > 40:
                docs.append(para.strip().encode("utf-8"))
    return docs


def pack(docs: list[bytes], seq_len: int, eos: int = EOS) -> tuple[np.ndarray, list[list[int]]]:
    """Documents (bytes, or lists of token ids) end to end, ``eos`` after each, cut into rows."""
    stream, starts = [], []
    for doc in docs:
        starts.append(len(stream))
        stream.extend(doc)
        stream.append(eos)
    rows = len(stream) // seq_len
    ids = np.array(stream[: rows * seq_len], dtype=np.uint16).reshape(rows, seq_len)
    starts_arr = np.array(starts)
    doc_starts = [
        [int(s - r * seq_len) for s in starts_arr[(starts_arr >= r * seq_len) & (starts_arr < (r + 1) * seq_len)]]
        for r in range(rows)
    ]
    return ids, doc_starts


def write_split(root: Path, seq_len: int, split: str, docs: list[bytes], rows_per_shard: int = 16,
                metadata: dict | None = None, max_rows: int | None = None, eos: int = EOS) -> int:
    ids, doc_starts = pack(docs, seq_len, eos)
    if max_rows is not None:
        ids, doc_starts = ids[:max_rows], doc_starts[:max_rows]
    meta = {"format_version": FORMAT_VERSION, "tokenizer_sha256": TOKENIZER_SHA, "seq_len": seq_len,
            "eos_id": eos, "vocab_size": VOCAB, "split": split, "config": "{}"}
    meta.update(metadata or {})
    folder = split_dir(root, seq_len, split)
    schema = shard_schema(seq_len, meta)
    shards = []
    for n, start in enumerate(range(0, len(ids), rows_per_shard)):
        chunk = ids[start : start + rows_per_shard]
        table = rows_table(chunk, doc_starts[start : start + rows_per_shard], ["test"] * len(chunk), schema)
        # two record batches per shard, so readers must handle several
        shards.append(write_shard(folder / shard_name(n), table, rows_per_batch=max(len(chunk) // 2, 1)))
    write_manifest(folder, {"shards": shards})
    return len(ids)


def write_token_dir(root: Path, seq_lens=(64, 256)) -> Path:
    docs = real_documents()
    cut = max(len(docs) // 10, 4)
    for seq_len in seq_lens:
        write_split(root, seq_len, "train", docs[cut:])
        write_split(root, seq_len, "validation", docs[:cut])
    return root


TINY_MODEL = f"""\
# a 2-layer, 32-wide BTLM (muP, ALiBi, SwiGLU) over byte tokens
vocab_size: {VOCAB}
n_positions: 1024
n_embd: 32
n_layer: 2
n_head: 2
n_inner: 64
activation_function: swiglu
position_embedding_type: alibi
initializer_range: 0.073
mup_base_width: 32
mup_embeddings_scale: 14.6
mup_output_alpha: 2.22
mup_scale_qk_dot_by_d: true
bos_token_id: {EOS}
eos_token_id: {EOS}
"""


def tiny_config(tmp_path: Path, tokens_root: Path, **overrides):
    """The demo config shrunk to seconds: a 2-layer 32-wide BTLM on byte tokens."""
    from train.config import TrainConfig

    tmp_path.mkdir(parents=True, exist_ok=True)
    model_yaml = tmp_path / "tiny-btlm.yaml"
    model_yaml.write_text(TINY_MODEL, encoding="utf-8")
    base = {
        "model": {"config": str(model_yaml), "overrides": {}},
        "data": {"root": str(tokens_root), "tokenizer_sha256": None},
        "phases": [{"seq_len": 64, "fraction": 0.5}, {"seq_len": 256, "fraction": 0.5}],
        "tokens_per_batch": 1024, "micro_batch_tokens": 256, "total_tokens": 1024 * 12,
        "lr": 3e-3, "warmup_tokens": 2048,
        "eval": {"every": 4, "tokens": 1024, "long_context_len": 1024, "long_context_sequences": 1,
                 "long_context_chunk": 256, "long_context_buckets": 6},
        "checkpoint_every": 3, "keep_last": 2, "precision": "fp32", "compile": False, "num_threads": 1,
        "log": {"every": 1, "progress": False, "tensorboard": False, "peak_tflops": None},
        "sample": {"tokenizer": None},
        "run_dir": str(tmp_path / "run"),
    }
    return load_config(TrainConfig, REPO / "configs" / "train" / "demo.yaml", _merge(base, overrides))


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
