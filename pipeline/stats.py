"""Statistics and integrity checks of packed token shards (pyarrow only).

    python -m pipeline.stats data/tokens [--json]
    python -m pipeline.stats s3://bucket/tokens      (shard folders on an object store: fetched to a temporary folder)

For every ``seq<L>/<split>`` folder under the given directory: shards, rows, tokens,
tokens per source and their share, documents per row, the fraction of documents split
across rows, padding and remainder, and checks: the EOS count equals the number of
documents, no id is >= the vocabulary size, shards match their manifest (rows and
SHA-256) and carry the metadata of the shard contract. Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from common.config import read_yaml
from common.storage import is_url, location
from pipeline.shard_format import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    METADATA_KEYS,
    SHARD_GLOB,
    iter_batches,
    listed_shards,
    read_manifest,
    read_metadata,
)


def folder_stats(folder: Path) -> dict[str, Any]:
    """Statistics and check results of one folder of shards (one length, one split)."""
    checks: dict[str, bool] = {}
    problems: list[str] = []
    try:
        manifest = read_manifest(folder)
    except ValueError as exc:
        manifest = None
        problems.append(str(exc))
    shard_paths = sorted(folder.glob(SHARD_GLOB))
    rows = eos = doc_starts = split_docs = max_id = 0
    seq_len = vocab_size = eos_id = None
    rows_by_source: dict[str, int] = {}
    for path in shard_paths:
        meta = read_metadata(path)
        missing = [k for k in METADATA_KEYS if k not in meta]
        if missing:
            problems.append(f"{path.name}: metadata lacks {missing}")
            continue
        if meta["format_version"] != str(FORMAT_VERSION):
            problems.append(f"{path.name}: format_version {meta['format_version']}, expected {FORMAT_VERSION}")
        seq_len, vocab_size, eos_id = int(meta["seq_len"]), int(meta["vocab_size"]), int(meta["eos_id"])
        table = pa.Table.from_batches(list(iter_batches(path)))
        ids = table.column("input_ids").combine_chunks()
        values = ids.values if len(ids) else pa.array([], pa.uint16())
        rows += len(table)
        eos += int(pc.sum(pc.equal(values, eos_id)).as_py() or 0)
        max_id = max(max_id, int(pc.max(values).as_py() or 0))
        starts_per_row = pc.list_value_length(table.column("doc_starts"))
        doc_starts += int(pc.sum(starts_per_row).as_py() or 0)
        # A document started in a row and still open at its end continues in another row.
        open_at_end = pc.not_equal(pc.list_element(ids, seq_len - 1), eos_id) if len(ids) else pa.array([], pa.bool_())
        split_docs += int(pc.sum(pc.and_(pc.greater(starts_per_row, 0), open_at_end)).as_py() or 0)
        for entry in pc.value_counts(table.column("source")).to_pylist():
            rows_by_source[entry["values"]] = rows_by_source.get(entry["values"], 0) + entry["counts"]
    match = re.fullmatch(r"seq(\d+)", folder.parent.name)
    seq_len = seq_len or (int(match.group(1)) if match else 0)
    result: dict[str, Any] = {
        "folder": f"{folder.parent.name}/{folder.name}",
        "split": folder.name,
        "seq_len": seq_len,
        "shards": len(shard_paths),
        "rows": rows,
        "tokens": rows * seq_len,
        "documents_started": doc_starts,
        "documents_per_row": round(doc_starts / rows, 4) if rows else 0.0,
        "documents_split_across_rows": split_docs,
        "fraction_documents_split": round(split_docs / doc_starts, 4) if doc_starts else 0.0,
        "eos": eos,
        "max_id": max_id,
        "rows_by_majority_source": dict(sorted(rows_by_source.items())),
    }
    checks["ids_below_vocab_size"] = vocab_size is None or max_id < vocab_size
    if manifest is not None:
        remainder = manifest.get("remainder", {})
        source_tokens = manifest.get("source_tokens", {})
        total = sum(source_tokens.values())
        result.update(
            padding_tokens=manifest.get("padding_tokens", 0),
            remainder_tokens=remainder.get("tokens", 0),
            documents=manifest.get("documents"),
            source_tokens={k: {"tokens": v, "share": round(v / total, 4) if total else 0.0} for k, v in source_tokens.items()},
        )
        documents = manifest.get("documents")
        checks["eos_count_equals_documents"] = eos + remainder.get("eos", 0) == documents
        checks["document_starts_equal_documents"] = doc_starts + remainder.get("documents_started", 0) == documents
        checks["tokens_equal_document_tokens"] = rows * seq_len + remainder.get("tokens", 0) == manifest.get("document_tokens")
        listed = listed_shards(manifest)
        checks["shards_match_manifest"] = sorted(listed) == [p.name for p in shard_paths] and all(
            listed[p.name].get("rows") == _rows(p) and listed[p.name].get("sha256") == _sha256(p) for p in shard_paths
        )
    else:
        if not problems:  # (a manifest that cannot be read is a problem named above)
            problems.append(f"{folder}: no {MANIFEST_NAME}")
        checks["eos_count_equals_documents"] = eos == doc_starts - split_docs
    result["checks"] = checks
    result["problems"] = problems
    result["ok"] = all(checks.values()) and not problems
    return result


def _rows(path: Path) -> int:
    return sum(batch.num_rows for batch in iter_batches(path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def find_folders(root: Path) -> list[Path]:
    """Every folder holding shards or a shard manifest: ``seq<L>/<split>`` under root."""
    if any(root.glob(SHARD_GLOB)) or (root / MANIFEST_NAME).exists() and re.fullmatch(r"seq\d+", root.parent.name):
        return [root]
    found = {p.parent for p in root.glob("seq*/*/" + MANIFEST_NAME)} | {p.parent for p in root.glob("seq*/*/" + SHARD_GLOB)}
    order = {"train": 0, "validation": 1, "test": 2}
    return sorted(found, key=lambda f: (int(f.parent.name[3:]) if f.parent.name[3:].isdigit() else 0, order.get(f.name, 3), f.name))


def collect(root: Path) -> dict[str, Any]:
    folders = [folder_stats(f) for f in find_folders(root)]
    holdout = {}
    for f in folders:
        if f["split"] != "train":
            holdout[f"seq{f['seq_len']}"] = holdout.get(f"seq{f['seq_len']}", 0) + f["tokens"]
    return {
        "root": str(root),
        "folders": folders,
        "holdout_tokens": holdout,
        "ok": bool(folders) and all(f["ok"] for f in folders),
    }


def render(report: dict[str, Any]) -> str:
    lines = []
    header = f"{'folder':<20} {'shards':>6} {'rows':>9} {'tokens':>13} {'docs/row':>9} {'docs split':>10} {'remainder':>10} {'padding':>8}  checks"
    lines.append(header)
    lines.append("-" * len(header))
    for f in report["folders"]:
        lines.append(
            f"{f['folder']:<20} {f['shards']:>6} {f['rows']:>9,} {f['tokens']:>13,} {f['documents_per_row']:>9.2f} "
            f"{f['fraction_documents_split']:>10.1%} {f.get('remainder_tokens', 0):>10,} {f.get('padding_tokens', 0):>8,}  "
            f"{'ok' if f['ok'] else 'FAILED'}"
        )
    for f in report["folders"]:
        if f.get("source_tokens"):
            lines.append(f"\n{f['folder']}: tokens per source")
            for name, v in sorted(f["source_tokens"].items(), key=lambda kv: -kv[1]["tokens"]):
                rows = f["rows_by_majority_source"].get(name, 0)
                lines.append(f"  {name:<28} {v['tokens']:>13,} {v['share']:>7.1%}   {rows:>8,} rows led by it")
        failed = [k for k, ok in f["checks"].items() if not ok] + f["problems"]
        if failed:
            lines.append(f"  FAILED: {', '.join(failed)}")
    holdout = ", ".join(f"{k}: {v:,}" for k, v in report["holdout_tokens"].items()) or "none"
    lines.append(f"\ntokens in holdout splits: {holdout}")
    lines.append("all checks passed" if report["ok"] else "SOME CHECKS FAILED")
    return "\n".join(lines)


def fetch_shard_folders(url: str, scratch: Path) -> Path:
    """The shard folders (``seq<L>/<split>/``) below an object-store URL, copied under ``scratch``."""
    root = location(url)
    for f in root.list_files():
        rel = f.relative_to(root)
        if re.fullmatch(r"seq\d+/[^/]+/[^/]+", rel) or "/" not in rel:
            f.fetch(scratch)
    return scratch / root.scheme / root.path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="the output of make tokenize (a path or URL), one seq<L>/<split> folder, or a tokenize config (its output)")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    args = parser.parse_args(argv)
    if args.directory.endswith((".yaml", ".yml")) and Path(args.directory).is_file():
        args.directory = str(read_yaml(args.directory).get("output", ""))
    if is_url(args.directory):
        with tempfile.TemporaryDirectory(prefix="stats-") as scratch:
            report = collect(fetch_shard_folders(args.directory, Path(scratch)))
        report["root"] = args.directory
    else:
        args.directory = Path(args.directory)
        if not args.directory.is_dir():
            parser.exit(2, f"{parser.prog}: {args.directory} is not a directory\n")
        report = collect(args.directory)
    if not report["folders"]:
        parser.exit(2, f"{parser.prog}: no shard folders (seq<L>/<split>/) under {args.directory}\n")
    print(json.dumps(report, indent=2) if args.json else render(report))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
