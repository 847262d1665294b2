"""The dedup stage's accounting in SlimPajama's terms, and its single-file outputs.

Every input document lands in exactly one outcome column, so for each source
``docs_in = short + quality + exact + near + rejected + kept`` (and the same for
bytes); ``check_counts`` asserts it before the report is written. ``write_outputs``
joins the ledger parts, writes the quarantine and report.json.
"""

from __future__ import annotations

from typing import Iterable

import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.storage import Location, spooled
from pipeline.corpus_io import Rejected, SourceFile
from pipeline.corpus_write import Quarantine
from pipeline.dedup.layout import read_table

OUTCOMES = ("short", "quality", "exact", "near", "rejected", "kept")


def outcome(status: str, reason: str | None) -> str:
    """The report column of one ledger row."""
    if status == "kept":
        return "kept"
    if status == "rejected":
        return "rejected"
    if status == "duplicate":
        return "exact" if reason == "exact" else "near"
    if status == "filtered":
        return "short" if reason == "short" else "quality"
    raise ValueError(f"unknown ledger status {status!r}")


def empty_counts() -> dict[str, int]:
    counts = {"docs_in": 0, "bytes_in": 0}
    for name in OUTCOMES:
        counts[f"{name}_docs"] = 0
        counts[f"{name}_bytes"] = 0
    return counts


def add_row(table: dict[str, dict[str, int]], source: str, nbytes: int, status: str, reason: str | None) -> None:
    row = table.setdefault(source, empty_counts())
    name = outcome(status, reason)
    row["docs_in"] += 1
    row["bytes_in"] += nbytes
    row[f"{name}_docs"] += 1
    row[f"{name}_bytes"] += nbytes


def merge_tables(tables: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for table in tables:
        for source, counts in table.items():
            row = out.setdefault(source, empty_counts())
            for key, value in counts.items():
                row[key] += value
    return dict(sorted(out.items()))


def with_total(table: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    total = empty_counts()
    for counts in table.values():
        for key, value in counts.items():
            total[key] += value
    return {**table, "TOTAL": total}


def check_counts(table: dict[str, dict[str, int]]) -> None:
    for source, c in table.items():
        for unit in ("docs", "bytes"):
            parts = sum(c[f"{name}_{unit}"] for name in OUTCOMES)
            if parts != c[f"{unit}_in"]:
                raise AssertionError(f"source {source}: {unit} in {c[f'{unit}_in']} != sum of outcomes {parts}")


def removed_percent(c: dict[str, int], unit: str) -> float:
    total = c[f"{unit}_in"]
    return 0.0 if total == 0 else 100.0 * (total - c[f"kept_{unit}"]) / total


def format_table(table: dict[str, dict[str, int]]) -> str:
    """The printed report: one row per source plus TOTAL."""
    head = ("source", "docs in", "MB in", "short", "quality", "exact dup", "near dup", "rejected", "kept", "MB kept", "% docs rm", "% bytes rm")
    rows = [head]
    for source, c in with_total(table).items():
        rows.append(
            (
                source,
                f"{c['docs_in']:,}",
                f"{c['bytes_in'] / 1e6:,.2f}",
                f"{c['short_docs']:,}",
                f"{c['quality_docs']:,}",
                f"{c['exact_docs']:,}",
                f"{c['near_docs']:,}",
                f"{c['rejected_docs']:,}",
                f"{c['kept_docs']:,}",
                f"{c['kept_bytes'] / 1e6:,.2f}",
                f"{removed_percent(c, 'docs'):.2f}",
                f"{removed_percent(c, 'bytes'):.2f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for k, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells))
        if k == 0 or k == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def build_report(counts: list[dict[str, dict[str, int]]], files: int, documents: int) -> dict:
    """report.json from the write step's per-file counts (the columns must add up)."""
    table = merge_tables(counts)
    total = with_total(table)
    check_counts(total)
    return {
        "sources": table,
        "total": total["TOTAL"],
        "removed_percent": {
            source: {"docs": round(removed_percent(c, "docs"), 4), "bytes": round(removed_percent(c, "bytes"), 4)}
            for source, c in total.items()
        },
        "files": files,
        "documents": documents,
    }


def write_ledger(parts: list[Location], path: Location) -> None:
    """The per-file ledger parts joined in input order, one part in memory at a time."""
    with spooled(path) as tmp:
        writer = None
        for part_path in parts:
            part = read_table(part_path)
            if writer is None:
                writer = pq.ParquetWriter(tmp, part.schema, compression="zstd")
            writer.write_table(part)
        writer.close()


def write_quarantine(tables: list[Location], files: list[SourceFile], path: Location) -> None:
    """Rejected input with file, line, reason and a preview of the bytes."""
    columns = ["id", "line", "source", "bytes", "status", "reason", "raw"]
    with spooled(path) as tmp, Quarantine(tmp) as quarantine:
        for table_path, sf in zip(tables, files):
            t = read_table(table_path, columns=columns)
            for row in t.filter(pc.equal(t.column("status"), "rejected")).to_pylist():
                quarantine.add(Rejected(row["id"], row["source"], sf.label, row["line"], row["reason"], row["raw"] or "", row["bytes"]))
