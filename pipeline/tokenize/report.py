"""The tokenize stage's report (its manifest.json) and the summary printed at the end."""

from __future__ import annotations

from collections import Counter
from typing import Any

from common.config import to_dict
from pipeline.shard_format import FORMAT_VERSION
from pipeline.tokenize.encode import REJECTED_EXAMPLES
from pipeline.tokenizer import resolve_encoder


def build_report(cfg, files, summaries, splits, megatron, tokenizer, reused, tokenize_wall, total_wall) -> dict[str, Any]:
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
    for result in megatron:
        if result["split"] == "train":  # the same removals when there are no Arrow shards
            removed = removed or result.get("decontamination_removed", {})
    input_bytes = sum(c["bytes"] for per in documents.values() for c in per.values())
    report = {
        "stage": "tokenize",
        "complete": True,
        "format_version": FORMAT_VERSION,
        "tokenizer_sha256": tokenizer.sha256,
        "eos_id": tokenizer.eos_id,
        "vocab_size": tokenizer.vocab_size,
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
            "encoder": resolve_encoder(cfg.run.encoder, tokenizer.gpt2),
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
    if megatron:
        report["megatron"] = {r["split"]: {k: v for k, v in r.items() if k not in ("split", "timing", "decontamination_removed")} for r in megatron}
        report["timing"]["megatron_s"] = round(sum(r["timing"]["megatron_s"] for r in megatron), 3)
    return report


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
    for split, m in report.get("megatron", {}).items():
        print(f"  megatron/{m['prefix']:<24} {m['documents']:>9,} documents {m['tokens']:>13,} tokens ({m['dtype']})")
    for name, f in report["folders"].items():
        if f["rows"] == 0:
            print(f"  warning: {name} has no full row; a larger corpus or holdout fraction (split.*) fills it")
    t = report["timing"]
    print(f"  {t['input_bytes'] / 1e6:.1f} MB in {t['wall_s']:.1f} s ({t['mb_per_s']} MB/s, encoder {t['encoder']})")
