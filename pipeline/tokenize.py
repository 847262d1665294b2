"""``make tokenize``: GPT-2 BPE, train/holdout split, decontamination, packed Arrow shards.

    python -m pipeline.tokenize --config configs/data/tokenize.yaml input=DIR output=DIR

Steps (a Ray job; the math lives in pipeline.split, pipeline.tokenizer, pipeline.packing):

1. One task per corpus file: read, assign each document its split by id hash, hash its
   raw text, encode in batches with EOS appended, write the tokens to a part file
   ``<output>/.work/part-NNNNN.arrow`` (temporary name, then renamed; a JSON summary
   next to it marks it finished, so a re-run after a crash reuses it).
2. One task per split: stream the part files in corpus order, drop train documents whose
   text hash equals a holdout document's, repeat train documents by source weight, pack
   every configured length from the same token stream, shuffle rows across the split
   (seeded) and write ``seq<L>/<split>/shard-NNNNN.arrow`` plus a folder manifest.
3. ``<output>/manifest.json`` (the stage report) is written last: it marks completion.

Shards depend only on the corpus and on the settings outside ``run`` (which say how to
compute, not what): any number of workers or batch size gives byte-identical shards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.config import stage_cli, to_dict
from pipeline import split as splitting
from pipeline.corpus_io import Rejected, SourceFile, _reason_kind, iter_file, list_source_files
from pipeline.packing import Packer, RowSpool, partial_path, write_shards
from pipeline.shard_format import FORMAT_VERSION, MANIFEST_NAME, split_dir
from pipeline.tokenizer import (
    EOS_ID,
    VOCAB_SIZE,
    Encoder,
    load_tokenizer,
    resolve_encoder,
    resolve_path,
    tokenizer_sha256,
)

DEFAULT_CONFIG = "configs/data/tokenize.yaml"
WORK_DIR = ".work"
PART_VERSION = 1  # bump when the part file layout or its summary changes
REJECTED_EXAMPLES = 20

PART_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.int8(), nullable=False),
        pa.field("repeats", pa.int16(), nullable=False),
        pa.field("text_sha256", pa.binary(32), nullable=False),
        pa.field("tokens", pa.list_(pa.uint16()), nullable=False),
    ]
)


@dataclass
class SplitConfig:
    validation_fraction: float  # of documents, by id hash
    test_fraction: float
    seed: int

    def __post_init__(self) -> None:
        splitting.check_fractions(self.validation_fraction, self.test_fraction)


@dataclass
class PackConfig:
    seq_lens: list[int]
    source_weights: dict[str, float]  # train repetitions per source (missing: 1.0)
    shuffle_seed: int

    def __post_init__(self) -> None:
        if not self.seq_lens or any(L < 1 or L > (1 << 30) for L in self.seq_lens):
            raise ValueError(f"seq_lens must be a non-empty list of positive lengths, got {self.seq_lens}")
        if len(set(self.seq_lens)) != len(self.seq_lens):
            raise ValueError(f"seq_lens has duplicates: {self.seq_lens}")
        bad = {k: v for k, v in self.source_weights.items() if not 0 <= v <= 1000}
        if bad:
            raise ValueError(f"source_weights must be in [0, 1000]: {bad}")


@dataclass
class ShardConfig:
    max_bytes: int  # upper bound of one shard file
    rows_per_batch: int  # rows per Arrow record batch inside a shard

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.rows_per_batch < 1:
            raise ValueError(f"max_bytes and rows_per_batch must be positive, got {self.max_bytes}, {self.rows_per_batch}")


@dataclass
class RunConfig:
    encoder: Literal["auto", "tokenizers", "tiktoken"]  # auto = tiktoken when installed
    encode_threads: int  # threads per task inside the encoder
    batch_docs: int  # documents per encode batch (and per part-file record batch)
    num_cpus: int | None  # local Ray CPUs (null: all); ignored with RAY_ADDRESS
    keep_work: bool  # keep <output>/.work after success

    def __post_init__(self) -> None:
        if self.encode_threads < 1 or self.batch_docs < 1 or (self.num_cpus is not None and self.num_cpus < 1):
            raise ValueError("encode_threads, batch_docs and num_cpus must be positive")


@dataclass
class TokenizeConfig:
    input: str  # a cleaned corpus: one sub-folder per source
    output: str
    tokenizer: str | None  # tokenizer.json (null: the committed one)
    split: SplitConfig
    pack: PackConfig
    shards: ShardConfig
    run: RunConfig


def content_config(cfg: TokenizeConfig) -> dict[str, Any]:
    """The settings that decide shard contents (stored in every shard's metadata)."""
    data = to_dict(cfg)
    for key in ("input", "output", "run", "tokenizer"):
        data.pop(key)
    return data


def split_names(cfg: TokenizeConfig) -> list[str]:
    names = ["train", "validation"]
    if cfg.split.test_fraction > 0:
        names.append("test")
    return names


# --- step 1: tokenize one corpus file ---------------------------------------------

_ENCODERS: dict[tuple, Encoder] = {}


def _encoder(kind: str, path: str, threads: int) -> Encoder:
    key = (kind, path, threads)
    if key not in _ENCODERS:
        _ENCODERS[key] = Encoder(kind, path, threads)
    return _ENCODERS[key]


def _file_key(sf: SourceFile) -> dict[str, Any]:
    stat = sf.path.stat()
    return {"file": sf.label, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def tokenize_file(sf: SourceFile, part_path: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Encode one corpus file into a part file; return (and store) its summary."""
    part = Path(part_path)
    encoder = _encoder(settings["encoder"], settings["tokenizer"], settings["encode_threads"])
    counts: dict[str, dict[str, dict[str, int]]] = {}
    holdout: list[str] = []
    rejected: Counter = Counter()
    examples: list[dict[str, Any]] = []
    timing = {"read_s": 0.0, "encode_s": 0.0}
    batch: list = []

    partial = partial_path(part)
    sink = pa.OSFile(str(partial), "wb")
    writer = pa.ipc.new_file(sink, PART_SCHEMA)

    def flush() -> None:
        start = time.perf_counter()
        tokens, lengths = encoder.encode_with_eos([d.text for d in batch])
        timing["encode_s"] += time.perf_counter() - start
        splits, digests, reps = [], [], []
        for doc, n in zip(batch, lengths.tolist()):
            s = splitting.assign_split(doc.id, settings["seed"], settings["validation_fraction"], settings["test_fraction"])
            digest = splitting.text_sha256(doc.text)
            rep = splitting.repeats(doc.id, doc.source, settings["seed"], settings["source_weights"]) if s == splitting.TRAIN else 1
            splits.append(s)
            digests.append(digest)
            reps.append(rep)
            if s != splitting.TRAIN:
                holdout.append(digest.hex())
            entry = counts.setdefault(splitting.SPLITS[s], {}).setdefault(doc.source, {"documents": 0, "tokens": 0, "bytes": 0})
            entry["documents"] += 1
            entry["tokens"] += n
            entry["bytes"] += doc.nbytes
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
        token_lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(tokens, pa.uint16()))
        columns = [
            pa.array([d.id for d in batch], pa.string()),
            pa.array([d.source for d in batch], pa.string()),
            pa.array(splits, pa.int8()),
            pa.array(reps, pa.int16()),
            pa.array(digests, pa.binary(32)),
            token_lists,
        ]
        writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=PART_SCHEMA))
        batch.clear()

    start = time.perf_counter()
    for item in iter_file(sf):
        if isinstance(item, Rejected):
            rejected[f"{item.source}\t{_reason_kind(item.reason)}"] += 1
            if len(examples) < REJECTED_EXAMPLES:
                examples.append({"file": item.file, "line": item.line, "reason": item.reason})
            continue
        batch.append(item)
        if len(batch) >= settings["batch_docs"]:
            timing["read_s"] += time.perf_counter() - start
            flush()
            start = time.perf_counter()
    timing["read_s"] += time.perf_counter() - start
    if batch:
        flush()
    writer.close()
    sink.close()
    summary = {
        "part_version": PART_VERSION,
        "input": _file_key(sf),
        "settings": settings_key(settings),
        "counts": counts,
        "holdout_sha256": sorted(holdout),
        "rejected": dict(sorted(rejected.items())),
        "rejected_examples": examples,
        "timing": timing,
    }
    os.replace(partial, part)
    _write_json(part.with_suffix(".json"), summary)  # written last: marks the part finished
    return summary


def settings_key(settings: dict[str, Any]) -> str:
    """What a part file's contents depend on (execution-only settings excluded)."""
    relevant = {k: v for k, v in settings.items() if k not in ("encoder", "encode_threads", "batch_docs", "tokenizer")}
    relevant["tokenizer_sha256"] = settings["tokenizer_sha256"]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def finished_part(part: Path, sf: SourceFile, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stored summary of a part a previous run finished for this very input, else None."""
    marker = part.with_suffix(".json")
    if not (part.exists() and marker.exists()):
        return None
    try:
        summary = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if (
        summary.get("part_version") != PART_VERSION
        or summary.get("input") != _file_key(sf)
        or summary.get("settings") != settings_key(settings)
    ):
        return None
    return summary


# --- step 2: pack, shuffle and write one split ------------------------------------


def select_documents(
    batch: pa.RecordBatch, split: str, epoch: int, holdout: frozenset[bytes], removed: dict[str, dict[str, int]]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Token ids, per-document lengths and sources of the documents of ``batch`` that
    enter ``split``'s stream in this epoch.

    Train drops documents whose text hash equals a holdout document's (counted once, in
    epoch 0, into ``removed``) and keeps a document for ``repeats`` epochs. Selection is
    done with numpy masks: Arrow's filter would copy the list column batch by batch.
    """
    token_lists = batch.column("tokens")
    lengths = pc.list_value_length(token_lists).to_numpy()
    sources = batch.column("source").to_pylist()
    mask = batch.column("split").to_numpy() == splitting.SPLITS.index(split)
    if split == "train":
        if holdout:
            digests = batch.column("text_sha256").to_pylist()
            dirty = mask & np.fromiter((d in holdout for d in digests), dtype=bool, count=len(digests))
            if epoch == 0:
                for i in np.flatnonzero(dirty).tolist():
                    entry = removed.setdefault(sources[i], {"documents": 0, "tokens": 0})
                    entry["documents"] += 1
                    entry["tokens"] += int(lengths[i])
            mask &= ~dirty
        mask &= batch.column("repeats").to_numpy() > epoch
    tokens = token_lists.flatten().to_numpy()
    if mask.all():
        return tokens, lengths, sources
    return tokens[np.repeat(mask, lengths)], lengths[mask], [s for s, keep in zip(sources, mask.tolist()) if keep]


def pack_split(
    split: str,
    seq_len: int,
    part_paths: list[str],
    holdout: frozenset[bytes],
    max_repeats: int,
    output: str,
    work: str,
    shard_settings: dict[str, Any],
    metadata: dict[str, str],
) -> dict[str, Any]:
    """Stream the part files into packed, shuffled shards of one split at one length."""
    packer = Packer(seq_len, EOS_ID)
    spool = RowSpool(partial_path(Path(work) / f"rows-seq{seq_len}-{split}.arrow"), seq_len)
    removed: dict[str, dict[str, int]] = {}
    documents: Counter = Counter()
    tokens: Counter = Counter()
    start = time.perf_counter()
    epochs = max_repeats if split == "train" else 1
    for epoch in range(epochs):
        for part_path in part_paths:
            with pa.memory_map(part_path, "r") as mapped:
                reader = pa.ipc.open_file(mapped)
                for i in range(reader.num_record_batches):
                    ids, lengths, sources = select_documents(reader.get_batch(i), split, epoch, holdout, removed)
                    documents.update(sources)
                    for source, n in zip(sources, lengths.tolist()):
                        tokens[source] += n
                    spool.write(packer.add(ids, lengths, sources))
    timing = {"pack_s": time.perf_counter() - start}

    start = time.perf_counter()
    remainder = packer.finish()
    spool.close()
    folder = split_dir(output, seq_len, split)
    shard_metadata = {**metadata, "seq_len": str(seq_len), "split": split}
    entries = write_shards(
        spool.path, folder, shard_metadata, shard_settings["seed"], split,
        shard_settings["max_bytes"], shard_settings["rows_per_batch"],
    )
    spool.path.unlink()
    rows = sum(e["rows"] for e in entries)
    folder_manifest = {
        "format_version": FORMAT_VERSION,
        "split": split,
        "seq_len": seq_len,
        "eos_id": EOS_ID,
        "vocab_size": VOCAB_SIZE,
        "tokenizer_sha256": metadata["tokenizer_sha256"],
        "rows": rows,
        "tokens": rows * seq_len,
        "padding_tokens": 0,  # rows are always full; the tail is the remainder below
        "documents": int(sum(documents.values())),
        "document_tokens": int(sum(tokens.values())),
        "source_tokens": dict(sorted(packer.source_tokens.items())),
        "remainder": {
            "tokens": remainder.tokens,
            "documents_started": remainder.documents_started,
            "eos": remainder.eos,
            "source_tokens": dict(sorted(remainder.source_tokens.items())),
        },
        "shards": entries,
    }
    _write_json(folder / MANIFEST_NAME, folder_manifest)
    timing["write_s"] = time.perf_counter() - start
    return {
        "split": split,
        "decontamination_removed": dict(sorted(removed.items())),
        "folder": {f"seq{seq_len}/{split}": {k: v for k, v in folder_manifest.items() if k != "shards"} | {"shards": len(entries)}},
        "timing": timing,
    }


# --- the job ------------------------------------------------------------------------


def run(cfg: TokenizeConfig, progress: bool = True) -> dict[str, Any]:
    import ray
    from tqdm import tqdm

    from pipeline.ray_runtime import init_ray

    started = time.perf_counter()
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / MANIFEST_NAME).unlink(missing_ok=True)  # not complete until rewritten
    _clear_old_outputs(output)
    work = output / WORK_DIR
    work.mkdir(exist_ok=True)
    for stale in work.glob("*.tmp"):
        stale.unlink()

    tokenizer_path = str(resolve_path(cfg.tokenizer).resolve())
    tok_sha = tokenizer_sha256(tokenizer_path)
    load_tokenizer(tokenizer_path)  # fail here, not in a worker, on a bad tokenizer or encoder
    encoder = resolve_encoder(cfg.run.encoder)  # resolved once: every worker uses the same one
    if encoder == "tiktoken" and importlib.util.find_spec("tiktoken") is None:
        raise ImportError("run.encoder=tiktoken needs the tiktoken package: pip install -e '.[fast]'")
    files = list_source_files(cfg.input)
    if not files:
        raise FileNotFoundError(f"{cfg.input}: no corpus files (.jsonl, .jsonl.zst, .parquet) found")
    settings = {
        "tokenizer": tokenizer_path,
        "tokenizer_sha256": tok_sha,
        "encoder": encoder,
        "encode_threads": cfg.run.encode_threads,
        "batch_docs": cfg.run.batch_docs,
        "seed": cfg.split.seed,
        "validation_fraction": cfg.split.validation_fraction,
        "test_fraction": cfg.split.test_fraction,
        "source_weights": dict(cfg.pack.source_weights),
    }
    part_paths = [work / f"part-{i:05d}.arrow" for i in range(len(files))]
    summaries: list[dict[str, Any] | None] = [finished_part(p, sf, settings) for p, sf in zip(part_paths, files)]
    reused = sum(s is not None for s in summaries)

    init_ray(cfg.run.num_cpus)
    task = ray.remote(num_cpus=1)(tokenize_file)
    max_in_flight = max(1, int(ray.available_resources().get("CPU", 1))) * 2
    pending: dict[Any, int] = {}
    # Largest files first, so one big file does not run alone at the end.
    todo = sorted((i for i, s in enumerate(summaries) if s is None), key=lambda i: -files[i].path.stat().st_size)
    bar = tqdm(total=len(files), initial=reused, desc="tokenize files", unit="file", disable=not progress)
    while todo or pending:
        while todo and len(pending) < max_in_flight:
            i = todo.pop(0)
            pending[task.remote(files[i], str(part_paths[i]), settings)] = i
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            summaries[pending.pop(ref)] = ray.get(ref)
            bar.update(1)
    bar.close()
    tokenize_wall = time.perf_counter() - started

    holdout = frozenset(bytes.fromhex(h) for s in summaries for h in s["holdout_sha256"])  # type: ignore[index]
    max_repeats = max(
        [int(np.floor(w)) + (1 if w % 1 else 0) for w in cfg.pack.source_weights.values()] + [1]
    )
    metadata = {
        "format_version": str(FORMAT_VERSION),
        "tokenizer_sha256": tok_sha,
        "eos_id": str(EOS_ID),
        "vocab_size": str(VOCAB_SIZE),
        "config": json.dumps(content_config(cfg), sort_keys=True, separators=(",", ":")),
    }
    shard_settings = {"seed": cfg.pack.shuffle_seed, "max_bytes": cfg.shards.max_bytes, "rows_per_batch": cfg.shards.rows_per_batch}
    pack_task = ray.remote(num_cpus=1)(pack_split)
    holdout_ref = ray.put(holdout)
    # One task per (split, length): each reads the mapped parts on its own, so the big
    # train split packs its lengths in parallel.
    refs = [
        pack_task.remote(split, seq_len, [str(p) for p in part_paths], holdout_ref, max_repeats, str(output), str(work),
                         shard_settings, metadata)
        for split in split_names(cfg)
        for seq_len in cfg.pack.seq_lens
    ]
    splits = ray.get(refs)
    if not cfg.run.keep_work:
        shutil.rmtree(work)

    report = build_report(cfg, files, summaries, splits, tok_sha, reused, tokenize_wall, time.perf_counter() - started)  # type: ignore[arg-type]
    _write_json(output / MANIFEST_NAME, report)  # last: marks the stage complete
    return report


def build_report(cfg, files, summaries, splits, tok_sha, reused, tokenize_wall, total_wall) -> dict[str, Any]:
    documents: dict[str, dict[str, dict[str, int]]] = {}
    rejected: Counter = Counter()
    examples: list = []
    read_s = encode_s = 0.0
    for s in summaries:
        for split, per_source in s["counts"].items():
            for source, c in per_source.items():
                entry = documents.setdefault(split, {}).setdefault(source, {"documents": 0, "tokens": 0, "bytes": 0})
                for k in entry:
                    entry[k] += c[k]
        rejected.update(s["rejected"])
        examples.extend(s["rejected_examples"])
        read_s += s["timing"]["read_s"]
        encode_s += s["timing"]["encode_s"]
    folders = {}
    removed = {}
    pack_s = write_s = 0.0
    for result in splits:
        folders.update(result["folder"])
        pack_s += result["timing"]["pack_s"]
        write_s += result["timing"]["write_s"]
        if result["split"] == "train":  # every length's train task counts the same removals
            removed = result["decontamination_removed"]
    input_bytes = sum(c["bytes"] for per in documents.values() for c in per.values())
    return {
        "stage": "tokenize",
        "complete": True,
        "format_version": FORMAT_VERSION,
        "tokenizer_sha256": tok_sha,
        "eos_id": EOS_ID,
        "vocab_size": VOCAB_SIZE,
        "config": to_dict(cfg),
        "input_files": len(files),
        "input_files_reused": reused,
        "documents_by_split": {k: dict(sorted(v.items())) for k, v in sorted(documents.items())},
        "decontamination": {
            "holdout_documents": sum(c["documents"] for k, per in documents.items() if k != "train" for c in per.values()),
            "removed_from_train": removed,
            "removed_documents": sum(v["documents"] for v in removed.values()),
        },
        "rejected": {k.replace("\t", ": "): v for k, v in sorted(rejected.items())},
        "rejected_examples": examples[:REJECTED_EXAMPLES],
        "folders": folders,
        "timing": {
            "encoder": resolve_encoder(cfg.run.encoder),
            "wall_s": round(total_wall, 3),
            "tokenize_wall_s": round(tokenize_wall, 3),
            "read_s": round(read_s, 3),
            "encode_s": round(encode_s, 3),
            "pack_s": round(pack_s, 3),  # CPU seconds over all (split, length) tasks
            "write_s": round(write_s, 3),
            "pack_write_wall_s": round(total_wall - tokenize_wall, 3),
            "input_bytes": input_bytes,
            "mb_per_s": round(input_bytes / 1e6 / total_wall, 3) if total_wall else None,
        },
    }


def _clear_old_outputs(output: Path) -> None:
    """Remove shard folders of an earlier (possibly killed) run; they are rebuilt whole."""
    for child in output.iterdir():
        if child.is_dir() and re.fullmatch(r"seq\d+", child.name):
            shutil.rmtree(child)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    partial.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def print_summary(report: dict[str, Any]) -> None:
    print(f"tokenize: {report['input_files']} files ({report['input_files_reused']} reused from an earlier run)")
    for split, per_source in report["documents_by_split"].items():
        docs = sum(c["documents"] for c in per_source.values())
        toks = sum(c["tokens"] for c in per_source.values())
        print(f"  {split:<10} {docs:>9,} documents {toks:>13,} tokens (EOS included, before decontamination)")
    d = report["decontamination"]
    print(f"  decontamination: {d['removed_documents']:,} train documents equal a holdout document")
    if report["rejected"]:
        print(f"  rejected input records: {sum(report['rejected'].values()):,} (see manifest.json)")
    for name, f in report["folders"].items():
        print(f"  {name:<20} {f['shards']:>4} shards {f['rows']:>9,} rows of {f['documents']:,} documents, remainder {f['remainder']['tokens']:,} tokens")
    for name, f in report["folders"].items():
        if f["rows"] == 0:
            print(f"  warning: {name} has no full row; a larger corpus or holdout fraction (split.*) fills it")
    t = report["timing"]
    print(f"  {t['input_bytes'] / 1e6:.1f} MB in {t['wall_s']:.1f} s ({t['mb_per_s']} MB/s, encoder {t['encoder']})")


def main(argv: list[str] | None = None) -> None:
    cfg, _ = stage_cli(TokenizeConfig, __doc__.split("\n\n")[0], DEFAULT_CONFIG, argv, prog="python -m pipeline.tokenize")
    report = run(cfg)
    print_summary(report)
    print(f"wrote {Path(cfg.output) / MANIFEST_NAME}")


if __name__ == "__main__":
    main()
