"""Decontamination throughput against the dedup stage's, on the same corpus, same run.

Runs ``python -m pipeline.dedup`` on a corpus (default: the sample corpus) and then
``python -m pipeline.decontaminate`` on its cleaned corpus, each as its own process
tree sampled every 0.2 s for memory, and prints per stage: MB of text in, CPU
seconds (tasks + driver, from the stage's timings.json), MB/s per CPU-second (= per
core) and the peak PSS of the largest process. The evaluation set is ``--items``
passages of ``--words`` words cut from the corpus's documents (a mid-sized benchmark,
every item present in the corpus, so the scan also does its full share of redaction
with ``--action redact``). Also prints the size per document of the reference index
the dedup run published (what incremental dedup reads).

    python bench/decontaminate_speed.py --corpus data/sample --out /tmp/decontam-bench --num-cpus 2
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from dedup_scale import tree_memory  # noqa: E402

from pipeline.corpus_io import Document, read_corpus  # noqa: E402


def eval_items(corpus: Path, path: Path, items: int, words: int, seed: int) -> int:
    rng = random.Random(seed)
    docs = [d.text.split() for d in read_corpus(corpus) if isinstance(d, Document)]
    docs = [w for w in docs if len(w) >= words]
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(items):
            w = docs[rng.randrange(len(docs))]
            start = rng.randrange(len(w) - words + 1)
            fh.write(json.dumps({"text": " ".join(w[start:start + words])}) + "\n")
    return items


def run_stage(module: str, args: list[str], output: Path) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    cmd = [sys.executable, "-m", module, f"output={output}", "run.progress=false", *args]
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, largest = 0, ""
    while proc.poll() is None:
        now = tree_memory(proc.pid)
        if now["largest_pss"] > peak:
            peak, largest = now["largest_pss"], now["largest"]
        time.sleep(0.2)
    wall = time.time() - start
    log = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"{module} failed:\n{log[-3000:]}")
    timings = json.loads((output / "_work" / "timings.json").read_text())
    mb = timings["bytes_in"] / 1e6
    return {"stage": module.split(".")[-1], "mb_in": round(mb, 2), "wall_s": round(wall, 1),
            "cpu_s": round(timings["cpu_seconds"], 1), "mb_per_cpu_s": round(mb / timings["cpu_seconds"], 2),
            "peak_largest_process_pss_mb": round(peak / 1e6, 1), "largest_process": largest,
            "steps": {k: [round(w, 2), round(c, 2)] for k, (w, c) in timings["stages"].items()}}


def index_size(dedup_out: Path) -> dict:
    index = dedup_out / "index"
    manifest = json.loads((index / "manifest.json").read_text())
    total = sum(p.stat().st_size for p in index.rglob("*") if p.is_file())
    removed = sum(p.stat().st_size for p in (index / "removed").rglob("*") if p.is_file())
    docs = manifest["documents"]
    return {"index_documents": docs, "index_bytes_per_doc": round(total / docs, 1),
            "removed_texts_bytes_per_doc": round(removed / docs, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/sample")
    parser.add_argument("--out", default="/tmp/decontam-bench")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--words", type=int, default=100)
    parser.add_argument("--action", default="flag", choices=["flag", "remove", "redact"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cpus = f"run.num_cpus={args.num_cpus}"
    dedup = run_stage("pipeline.dedup", [f"input={Path(args.corpus).resolve()}", cpus], out / "dedup")
    eval_items(out / "dedup" / "corpus", out / "items.jsonl", args.items, args.words, args.seed)
    decontam = run_stage("pipeline.decontaminate", [f"input={out / 'dedup' / 'corpus'}", f"eval_sets=[{out / 'items.jsonl'}]",
                                                    f"policy.action={args.action}", cpus], out / "decontam")
    report = json.loads((out / "decontam" / "report.json").read_text())
    result = {"corpus": args.corpus, "num_cpus": args.num_cpus, "items": args.items, "words": args.words,
              "action": args.action, "dedup": dedup, "decontaminate": decontam, **index_size(out / "dedup"),
              "contaminated_docs": report["total"]["contaminated_docs"], "ngrams": report["ngrams"]}
    print(f"{'stage':<14} {'MB in':>8} {'CPU s':>7} {'MB/s/core':>10} {'peak PSS MB (largest process)':>30}")
    for r in (dedup, decontam):
        print(f"{r['stage']:<14} {r['mb_in']:>8.2f} {r['cpu_s']:>7.1f} {r['mb_per_cpu_s']:>10.2f} "
              f"{r['peak_largest_process_pss_mb']:>30.1f}")
    print(f"ratio decontaminate / dedup MB/s per core: {decontam['mb_per_cpu_s'] / dedup['mb_per_cpu_s']:.2f}; "
          f"index {result['index_bytes_per_doc']} bytes/doc ({result['removed_texts_bytes_per_doc']} of them removed "
          f"documents' texts) over {result['index_documents']:,} documents")
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
