"""Scale and memory: `make dedup` on a generated corpus, peak memory of every process.

    .venv/bin/python bench/dedup_scale.py [--docs 1000000] [--doc-bytes 2000] [--out /tmp/dedup_scale]

Generates ``--docs`` documents of about ``--doc-bytes`` bytes from real text (random
windows of the sample corpus with random word substitutions, so documents are
distinct), plants 3% near-duplicates (edited copies) and 2% exact copies (``--near``, ``--exact``;
raise ``--near`` to see that memory does not follow the number of candidate pairs), writes them
as ``.jsonl.zst`` files of 10,000 documents in four sources, then runs
``python -m pipeline.dedup`` in a subprocess and samples, every 0.2 s, the resident
memory of the driver and of the whole process tree (driver + Ray's processes).
Prints wall time, MB/s, peak driver RSS and the peak total as RSS, PSS and USS.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def generate(out: Path, docs: int, doc_bytes: int, corpus: str, seed: int, exact: float = 0.02, near: float = 0.03) -> int:
    import zstandard

    from pipeline.corpus_io import Document, read_corpus

    rng = random.Random(seed)
    words = []
    for item in read_corpus(corpus):
        if isinstance(item, Document):
            words.extend(item.text.split())
        if len(words) > 3_000_000:
            break
    per_doc = max(doc_bytes // 6, 20)
    total = 0
    cctx = zstandard.ZstdCompressor(level=3)
    sources = ["RedPajamaCommonCrawl", "RedPajamaC4", "RedPajamaGithub", "RedPajamaWikipedia"]
    recent: list[str] = []
    for file_no in range(0, docs, 10_000):
        lines = []
        for k in range(min(10_000, docs - file_no)):
            r = rng.random()
            if r < exact and recent:
                text = rng.choice(recent)  # exact copy
            elif r < exact + near and recent:
                w = rng.choice(recent).split(" ")
                for _ in range(max(1, len(w) // 40)):  # ~2.5% of words changed
                    w[rng.randrange(len(w))] = rng.choice(words)
                text = " ".join(w)
            else:
                start = rng.randrange(len(words) - per_doc)
                w = words[start : start + per_doc]
                for _ in range(len(w) // 5):
                    w[rng.randrange(len(w))] = rng.choice(words)
                text = " ".join(w)
            recent.append(text)
            if len(recent) > 2000:
                recent = recent[-1000:]
            source = sources[(file_no // 10_000) % len(sources)]
            lines.append(json.dumps({"text": text, "meta": {"redpajama_set_name": source}}))
            total += len(text.encode())
        folder = out / f"src{(file_no // 10_000) % len(sources)}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"chunk-{file_no // 10_000:05d}.jsonl.zst").write_bytes(cctx.compress(("\n".join(lines) + "\n").encode()))
    return total


def tree_memory(pid: int) -> dict[str, int]:
    """Resident memory of the driver and of the driver + every descendant, in bytes.

    ``rss`` sums each process's resident set, so pages shared between processes (Ray's
    object store, memory-mapped work files read by several tasks) count once per
    process; ``pss`` shares them out (proportional set size) and is the honest total;
    ``uss`` counts only the pages private to each process (its own heap).
    """
    import psutil

    out = {"driver_rss": 0, "rss": 0, "pss": 0, "uss": 0}
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out["rss"] += info.rss
        out["pss"] += getattr(info, "pss", info.rss)
        out["uss"] += info.uss
        if p.pid == pid:
            out["driver_rss"] = info.rss
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--doc-bytes", type=int, default=2000)
    parser.add_argument("--corpus", default="data/sample")
    parser.add_argument("--out", default="/tmp/dedup_scale")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exact", type=float, default=0.02, help="fraction of documents that are exact copies")
    parser.add_argument("--near", type=float, default=0.03,
                        help="fraction that are edited copies (raise it to see memory against candidate pairs)")
    args = parser.parse_args()
    out = Path(args.out)
    name = f"{args.docs}" if (args.exact, args.near) == (0.02, 0.03) else f"{args.docs}-e{args.exact}-n{args.near}"
    corpus = out / f"corpus-{name}"
    if not (corpus / "DONE").exists():
        t = time.time()
        nbytes = generate(corpus, args.docs, args.doc_bytes, args.corpus, args.seed, args.exact, args.near)
        (corpus / "DONE").write_text(str(nbytes))
        print(f"generated {args.docs:,} documents, {nbytes / 1e9:.2f} GB in {time.time() - t:.0f} s")
    nbytes = int((corpus / "DONE").read_text())
    result_dir = out / f"dedup-{name}"
    subprocess.run(["rm", "-rf", str(result_dir)], check=True)
    cmd = [sys.executable, "-m", "pipeline.dedup", f"input={corpus}", f"output={result_dir}", f"run.num_cpus={args.num_cpus}", "run.progress=false"]
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"driver_rss": 0, "rss": 0, "pss": 0, "uss": 0}
    while proc.poll() is None:
        for key, value in tree_memory(proc.pid).items():
            peak[key] = max(peak[key], value)
        time.sleep(0.2)
    wall = time.time() - start
    output = proc.stdout.read()
    print(output[-3000:])
    timings = json.loads((result_dir / "_work" / "timings.json").read_text()) if (result_dir / "_work" / "timings.json").exists() else {}
    pairs = re.search(r"([\d,]+) candidate pairs, ([\d,]+) verified", output)
    result = {
        "docs": args.docs,
        "planted_exact": args.exact,
        "planted_near": args.near,
        "candidate_pairs": int(pairs.group(1).replace(",", "")) if pairs else None,
        "gb": round(nbytes / 1e9, 3),
        "wall_s": round(wall, 1),
        "mb_per_s": round(nbytes / 1e6 / wall, 2),
        "mb_per_cpu_s": round(nbytes / 1e6 / timings["cpu_seconds"], 2) if timings else None,
        "peak_driver_rss_mb": round(peak["driver_rss"] / 1e6, 1),
        "peak_total_rss_mb": round(peak["rss"] / 1e6, 1),  # shared pages counted once per process
        "peak_total_pss_mb": round(peak["pss"] / 1e6, 1),  # shared pages shared out
        "peak_total_uss_mb": round(peak["uss"] / 1e6, 1),  # private pages only
        "returncode": proc.returncode,
    }
    print(json.dumps(result))
    (out / f"result-{name}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
