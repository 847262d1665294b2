"""Normalization and filter throughput on real text, side by side with plain ftfy.

    python bench/bench_normalize.py [--corpus data/sample] [--repeats 3] [--max-mb 30]
                                    [--source NAME ...] [--json out.json]

Reads the corpus with pipeline.corpus_io (the sample corpus of `make corpus` by
default) and times, on the same documents in the same process:
  ftfy.fix_text(text, normalization="NFC")    the reference
  pipeline.normalize.normalize_text            must give identical output (checked)
  clean_text, each filter rule, and the whole filter of slimpajama.yaml / quality.yaml.
Throughput is MB (UTF-8) per CPU-second of this one process, i.e. per core, so other
load on the machine inflates it less than wall time would; medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ftfy  # noqa: E402

from common.config import load_config  # noqa: E402
from pipeline import normalize  # noqa: E402
from pipeline.corpus_io import Document, read_corpus  # noqa: E402
from pipeline.filters import (  # noqa: E402
    build_filter,
    c4_rule,
    gopher_quality_rule,
    gopher_repetition_rule,
    short_rule,
)
from pipeline.normalize import clean_text, normalize_text  # noqa: E402


def load_documents(corpus: Path, max_bytes: int, sources: list[str] | None = None) -> list[tuple[str, str]]:
    """Documents taken round robin over the sources, up to ``max_bytes``."""
    by_source: dict[str, list[str]] = {}
    for item in read_corpus(corpus):
        if isinstance(item, Document) and (not sources or item.source in sources):
            by_source.setdefault(item.source, []).append(item.text)
    docs, total = [], 0
    queues = [iter(texts) for _, texts in sorted(by_source.items())]
    while queues and total < max_bytes:
        for queue in list(queues):
            text = next(queue, None)
            if text is None:
                queues.remove(queue)
                continue
            docs.append(text)
            total += len(text.encode("utf-8", "surrogatepass"))
    return [("", text) for text in docs]


def time_it(fn, texts, repeats: int) -> float:
    """Median CPU seconds of one pass of ``fn`` over ``texts``."""
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        for text in texts:
            fn(text)
        runs.append(time.process_time() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=str(REPO / "data/sample"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-mb", type=float, default=30.0)
    parser.add_argument("--source", action="append", help="only these sources (repeatable)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    docs = load_documents(Path(args.corpus), int(args.max_mb * 1e6), args.source)
    texts = [text for _, text in docs]
    mb = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
    non_ascii = sum(not t.isascii() for t in texts)
    print(f"{len(texts)} documents, {mb:.1f} MB ({non_ascii} with non-ASCII characters) from {args.corpus}")

    # Identity first, and how often ftfy itself still had to run.
    reference = [ftfy.fix_text(t, normalization="NFC") for t in texts]
    calls = []
    ftfy_segment = ftfy.fix_and_explain
    normalize.ftfy.fix_and_explain = lambda *a, **k: calls.append(1) or ftfy_segment(*a, **k)
    used_ftfy = 0
    try:
        for text, want in zip(texts, reference):
            calls.clear()
            if normalize_text(text) != want:
                raise SystemExit("normalize_text differs from ftfy.fix_text: a bug, please report it")
            used_ftfy += bool(calls)
    finally:
        normalize.ftfy.fix_and_explain = ftfy_segment
    changed = sum(r != t for r, t in zip(reference, texts))
    print(f"identical output on all documents; ftfy changes {changed}, ftfy still ran on {used_ftfy}")

    slim = load_config(_stage_config(), REPO / "configs/data/slimpajama.yaml").filters
    qual = load_config(_stage_config(), REPO / "configs/data/quality.yaml").filters
    slim_filter, qual_filter = build_filter(slim), build_filter(qual)
    cases = [
        ("ftfy.fix_text (NFC)", lambda t: ftfy.fix_text(t, normalization="NFC")),
        ("normalize_text", normalize_text),
        ("clean_text", clean_text),
        ("short rule", lambda t: short_rule(t, slim.short)),
        ("gopher_quality rule", lambda t: gopher_quality_rule(t, qual.gopher_quality)),
        ("gopher_repetition rule", lambda t: gopher_repetition_rule(t, qual.gopher_repetition)),
        ("c4 rule", lambda t: c4_rule(t, qual.c4)),
        ("filter, slimpajama.yaml", lambda t: slim_filter(t, "prose")),
        ("filter, quality.yaml (prose)", lambda t: qual_filter(t, "prose")),
    ]
    results = {}
    for name, fn in cases:
        seconds = time_it(fn, texts, args.repeats if "ftfy" not in name else 1)
        results[name] = {"cpu_s": seconds, "mb_per_s": mb / seconds, "docs_per_s": len(texts) / seconds}
    base = results["ftfy.fix_text (NFC)"]["mb_per_s"]
    print(f"\n{'step':32s} {'MB/s/core':>10s} {'docs/s':>10s} {'vs ftfy':>8s}")
    for name, row in results.items():
        print(f"{name:32s} {row['mb_per_s']:10.1f} {row['docs_per_s']:10.0f} {row['mb_per_s'] / base:7.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"documents": len(texts), "mb": mb, "results": results}, indent=2))


def _stage_config():
    from pipeline.dedup import DedupStageConfig

    return DedupStageConfig


if __name__ == "__main__":
    main()
