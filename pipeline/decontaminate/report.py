"""The stage's accounting and the contamination report people publish with a model.

Per source: ``docs_in = clean + contaminated + rejected`` and
``contaminated = flagged + removed + redacted`` (``check_counts``). Per evaluation
task: items, items too short to check (fewer words than n), items that overlap the
corpus (a contaminated document matched one of their n-grams), how much (the share of
an item's n-grams found in the corpus), and which items, for ``make eval``'s clean
score: a table printed, report.json and one PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from common.storage import Location, spooled
from pipeline.decontaminate.apply import COUNTS

MOSTLY = 0.5  # an item with at least this share of its n-grams in the corpus is "mostly contained"


def merge_counts(tables: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for table in tables:
        for source, counts in table.items():
            row = out.setdefault(source, dict.fromkeys(COUNTS, 0))
            for key, value in counts.items():
                row[key] += value
    total = dict.fromkeys(COUNTS, 0)
    for counts in out.values():
        for key, value in counts.items():
            total[key] += value
    return {**dict(sorted(out.items())), "TOTAL": total}


def check_counts(table: dict[str, dict[str, int]]) -> None:
    for source, c in table.items():
        if c["clean_docs"] + c["contaminated_docs"] + c["rejected_docs"] != c["docs_in"]:
            raise AssertionError(f"source {source}: clean + contaminated + rejected != docs in ({c})")
        if c["flagged_docs"] + c["removed_docs"] + c["redacted_docs"] != c["contaminated_docs"]:
            raise AssertionError(f"source {source}: flagged + removed + redacted != contaminated ({c})")


def task_table(items_path: Path, found: np.ndarray, item_docs: np.ndarray, n: int) -> dict[str, dict]:
    """Per task: counts, overlap and the overlapping items (index, sha256, share, documents)."""
    items = pq.read_table(items_path).to_pydict()
    ngrams = np.array(items["ngrams"], dtype=np.int64)
    share = np.divide(found, ngrams, out=np.zeros(len(ngrams)), where=ngrams > 0)
    out: dict[str, dict] = {}
    for i, task in enumerate(items["task"]):
        t = out.setdefault(task, {"items": 0, "too_short": 0, "overlapping": 0, "mostly_contained": 0,
                                  "contaminated_items": []})
        t["items"] += 1
        t["too_short"] += int(items["words"][i] < n)
        if item_docs[i] > 0:
            t["overlapping"] += 1
            t["mostly_contained"] += int(share[i] >= MOSTLY)
            t["contaminated_items"].append({"index": items["index"][i], "sha256": items["sha256"][i],
                                            "ngram_share": round(float(share[i]), 4), "documents": int(item_docs[i])})
    for t in out.values():
        shares = [c["ngram_share"] for c in t["contaminated_items"]]
        t["overlap_percent"] = round(100.0 * t["overlapping"] / t["items"], 4)
        t["mean_ngram_share"] = round(float(np.mean(shares)), 4) if shares else 0.0
    return out


def format_tables(sources: dict[str, dict[str, int]], tasks: dict[str, dict]) -> str:
    rows = [("source", "docs in", "MB in", "clean", "contaminated", "flagged", "removed", "redacted", "docs out", "MB out")]
    for source, c in sources.items():
        rows.append((source, *(f"{c[k]:,}" for k in ("docs_in",)), f"{c['bytes_in'] / 1e6:,.2f}",
                     *(f"{c[k]:,}" for k in ("clean_docs", "contaminated_docs", "flagged_docs", "removed_docs",
                                             "redacted_docs", "docs_out")), f"{c['bytes_out'] / 1e6:,.2f}"))
    lines = _format(rows)
    rows = [("task", "items", "too short", "overlapping", "% overlapping", ">= 50% n-grams", "mean n-gram share")]
    for task, t in tasks.items():
        rows.append((task, f"{t['items']:,}", f"{t['too_short']:,}", f"{t['overlapping']:,}", f"{t['overlap_percent']:.2f}",
                     f"{t['mostly_contained']:,}", f"{t['mean_ngram_share']:.3f}"))
    return lines + "\n\n" + _format(rows)


def _format(rows: list[tuple]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        out.append("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def plot_tasks(tasks: dict[str, dict], path: Path | Location) -> None:
    """One PNG: per task, the share of items overlapping the corpus and mostly contained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(tasks)
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.5 * len(names)))
    ax.barh(y - 0.2, [tasks[t]["overlap_percent"] for t in names], 0.4, label="items overlapping the corpus")
    ax.barh(y + 0.2, [100.0 * tasks[t]["mostly_contained"] / tasks[t]["items"] for t in names], 0.4,
            label=f">= {MOSTLY:.0%} of an item's n-grams in the corpus")
    ax.set_yticks(y, names)
    ax.set_xlabel("% of the task's items")
    ax.set_xlim(0, 100)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Evaluation items found in the training corpus")
    fig.tight_layout()
    with spooled(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
