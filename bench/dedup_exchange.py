"""Storage requests of the dedup exchange on a corpus of many small files.

    .venv/bin/python bench/dedup_exchange.py [--files 2000] [--partitions 2048] [--doc-bytes 1500]
                                             [--corpus data/sample] [--out /tmp/dedup_exchange] [--shuffle]

Splits the documents of a real corpus (cut into windows of about ``--doc-bytes``) into
``--files`` small JSONL files, runs ``python -m pipeline.dedup`` on them with
``run.partitions=--partitions`` and prints, per step, the storage requests its tasks
made through the layout helpers (``_work/timings.json``: opens, ranged or whole reads,
writes) against the budget of 10 x (files + partitions), beside what the exchange
before the grouped one made: each partition task loading its member of every file's
``.npz`` (and each file task its member of every partition's), counted from that code
as 2 requests per load (open + read; a zip member on object storage takes more).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def generate(out: Path, files: int, doc_bytes: int, corpus: str, shuffle: bool = False) -> int:
    """``files`` JSONL files of the corpus's documents cut into windows (in a seeded random
    order with ``shuffle``: copies of a text then sit in many files, as in a crawl);
    returns the document count."""
    import random

    from pipeline.corpus_io import Document, read_corpus

    docs = []
    for item in read_corpus(corpus):
        if isinstance(item, Document):
            text = item.text
            docs.extend((text[i : i + doc_bytes], item.source) for i in range(0, len(text), doc_bytes))
    if shuffle:
        random.Random(0).shuffle(docs)
    out.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(docs) // files)
    for f in range(files):
        rows = docs[f * per_file : (f + 1) * per_file]
        lines = [json.dumps({"text": t, "meta": {"redpajama_set_name": s}}) for t, s in rows]
        (out / f"part-{f:05d}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(docs)


def before(step: str, F: int, P: int) -> int | None:
    """Requests of the loads the exchange before this one made of other tasks' files, from
    its code (2 per load: open + read), or None for a step that had no such loads or did
    not exist. Not counted: the data-dependent reads of other files (signatures and
    shingle sets by document, keep ranks by file), which only add to these."""
    loads = {
        "exact": P * F,  # each partition: its member of every file's hash rows
        "bands": F * P,  # each file: every exact partition's non-representatives
        "lsh": P * F,  # each partition: its member of every file's bands
        "shingles": F * P,  # each file: every lsh partition's undecided pairs
        "keep": P * P,  # each partition: its labels from every last large-star file
        "clusters": F * 2 * P,  # each file: every keep partition's nodes, every exact partition's non-representatives
    }
    if step[:1] == "r" and step[1:3].isdigit() and "-merge" not in step:
        return 2 * P * P  # each partition: its member of every file of the round before
    return 2 * loads[step] if step in loads else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--partitions", type=int, default=2048)
    ap.add_argument("--doc-bytes", type=int, default=1500)
    ap.add_argument("--corpus", default=str(REPO / "data" / "sample"))
    ap.add_argument("--out", default="/tmp/dedup_exchange")
    ap.add_argument("--shuffle", action="store_true", help="documents in a random order: copies spread over the files")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    docs = generate(out / "input", args.files, args.doc_bytes, args.corpus, args.shuffle)
    F, P = args.files, args.partitions
    print(f"{docs:,} documents in {F:,} files, {P:,} partitions", flush=True)
    start = time.time()
    subprocess.run([sys.executable, "-m", "pipeline.dedup", f"input={out / 'input'}", f"output={out / 'dedup'}",
                    f"run.partitions={P}", "run.keep_work=true", "run.progress=false"], check=True, cwd=REPO)
    wall = time.time() - start
    timings = json.loads((out / "dedup" / "_work" / "timings.json").read_text())
    budget = 10 * (F + P)
    print(f"\ndedup wall {wall:.1f} s; budget per step 10 x (files + partitions) = {budget:,}")
    print(f"{'step':<22}{'now':>12}{'before':>14}  open / read / write now")
    over, total_now, total_before = 0, 0, 0
    for step, kinds in timings["requests"].items():
        now, was = sum(kinds.values()), before(step, F, P)
        over += now > budget
        total_now += now
        total_before += was or 0
        shown = f"{was:>14,}" if was is not None else f"{'-':>14}"
        print(f"{step:<22}{now:>12,}{shown}  {kinds.get('open', 0):,} / {kinds.get('read', 0):,} / {kinds.get('write', 0):,}")
    print(f"{'all steps':<22}{total_now:>12,}{total_before:>14,}")
    print(f"largest step: {max(sum(k.values()) for k in timings['requests'].values()):,}; steps over the budget: {over}")

if __name__ == "__main__":
    main()
