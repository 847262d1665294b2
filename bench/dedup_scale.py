"""Scale and memory: `make dedup` on generated corpora of growing size.

    .venv/bin/python bench/dedup_scale.py [--docs 1000000 ...] [--doc-bytes 2000] [--out /tmp/dedup_scale]
    .venv/bin/python bench/dedup_scale.py --docs 250000 500000 1000000 2000000 4000000 --plot curve.png

For each ``--docs`` N: generates N documents of about ``--doc-bytes`` bytes from real
text (random windows of the sample corpus with random word substitutions, so documents
are distinct), plants 3% near-duplicates (edited copies) and 2% exact copies
(``--near``, ``--exact``; raise ``--near`` to see that memory does not follow the number
of candidate pairs), writes them as ``.jsonl.zst`` files of 10,000 documents in four
sources, then runs ``python -m pipeline.dedup`` in a subprocess and samples, every
0.2 s, the memory of every process of the run (driver + Ray's processes). Prints, and
with several sizes tabulates: wall seconds per GB, per step, peak memory (PSS) of the
largest single process and of all processes together, peak driver RSS. The generated
corpus is generated once, for the largest size; a smaller size runs on its first files
(linked). Each size's dedup output is deleted after its run unless ``--keep``.

``--baseline DIR`` also runs, on the same corpus and in the same run, the dedup of
another checkout of this project (e.g. the commit before a change), prints both, and
compares every published output file of the two (the manifest without its output path).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import re
import shutil
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

    out = {"driver_rss": 0, "rss": 0, "pss": 0, "uss": 0, "largest_pss": 0, "largest": ""}
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
        if getattr(info, "pss", info.rss) > out["largest_pss"]:
            out["largest_pss"] = getattr(info, "pss", info.rss)
            out["largest"] = " ".join(p.cmdline())[:60].strip()  # a Ray worker's title names its task
        out["uss"] += info.uss
        if p.pid == pid:
            out["driver_rss"] = info.rss
    return out


def corpus_of(args, docs: int) -> Path:
    """A corpus of ``docs`` documents: the first files of one corpus generated for the
    largest size (files of 10,000 documents; a planted copy only copies an earlier
    document), linked into a folder of its own."""
    out = Path(args.out)
    tag = "" if (args.exact, args.near) == (0.02, 0.03) else f"-e{args.exact}-n{args.near}"
    full = out / f"corpus-{max(args.docs)}{tag}"
    if not (full / "DONE").exists():
        t = time.time()
        nbytes = generate(full, max(args.docs), args.doc_bytes, args.corpus, args.seed, args.exact, args.near)
        (full / "DONE").write_text(str(nbytes))
        print(f"generated {max(args.docs):,} documents, {nbytes / 1e9:.2f} GB in {time.time() - t:.0f} s", flush=True)
    if docs == max(args.docs):
        return full
    corpus = out / f"corpus-{docs}{tag}-of-{max(args.docs)}"
    if not (corpus / "DONE").exists():
        shutil.rmtree(corpus, ignore_errors=True)
        nbytes = 0
        for path in sorted(full.glob("src*/chunk-*.jsonl.zst")):
            if int(path.stem.split("-")[1].split(".")[0]) * 10_000 < docs:
                (corpus / path.parent.name).mkdir(parents=True, exist_ok=True)
                (corpus / path.parent.name / path.name).symlink_to(path)
                nbytes += text_bytes(path)
        (corpus / "DONE").write_text(str(nbytes))
    return corpus


def text_bytes(path: Path) -> int:
    import zstandard

    data = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    return sum(len(json.loads(line)["text"].encode()) for line in data.splitlines() if line)


def run_size(args, docs: int, code: Path = REPO, label: str = "") -> dict:
    out = Path(args.out)
    name = f"{docs}" if (args.exact, args.near) == (0.02, 0.03) else f"{docs}-e{args.exact}-n{args.near}"
    corpus = corpus_of(args, docs)
    nbytes = int((corpus / "DONE").read_text())
    result_dir = out / f"dedup-{name}{label}"
    shutil.rmtree(result_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline.dedup", f"input={corpus}", f"output={result_dir}",
           f"run.num_cpus={args.num_cpus}", "run.progress=false", *args.override]
    start = time.time()
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"driver_rss": 0, "rss": 0, "pss": 0, "uss": 0, "largest_pss": 0, "largest": ""}
    while proc.poll() is None:
        now = tree_memory(proc.pid)
        if now["largest_pss"] > peak["largest_pss"]:
            peak["largest"] = now["largest"]
        for key, value in now.items():
            if key != "largest":
                peak[key] = max(peak[key], value)
        time.sleep(0.2)
    wall = time.time() - start
    output = proc.stdout.read()
    print(output[-2000:], flush=True)
    timing_file = result_dir / "_work" / "timings.json"
    timings = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    pairs = re.search(r"([\d,]+) candidate pairs, ([\d,]+) verified", output)
    gb = nbytes / 1e9
    steps: dict[str, float] = {}
    for step, (step_wall, _) in timings.get("stages", {}).items():
        group = "components" if step in ("route", "ranks", "keep", "clusters") or step.startswith("r") and step[1:3].isdigit() else step
        group = "merges" if "-merge" in step else group
        steps[group] = steps.get(group, 0.0) + step_wall / gb
    result = {
        "code": label or "this checkout",
        "docs": docs,
        "requests": sum(sum(kinds.values()) for kinds in timings.get("requests", {}).values()) or None,
        "planted_exact": args.exact,
        "planted_near": args.near,
        "candidate_pairs": int(pairs.group(1).replace(",", "")) if pairs else None,
        "gb": round(gb, 3),
        "wall_s": round(wall, 1),
        "s_per_gb": round(wall / gb, 1),  # the whole job, Ray's start-up included
        "steps_s_per_gb": round(sum(steps.values()), 1),  # the work: every step's wall time
        "step_s_per_gb": {k: round(v, 2) for k, v in steps.items()},
        "mb_per_s": round(nbytes / 1e6 / wall, 2),
        "mb_per_cpu_s": round(nbytes / 1e6 / timings["cpu_seconds"], 2) if timings else None,
        "peak_driver_rss_mb": round(peak["driver_rss"] / 1e6, 1),
        "peak_largest_process_pss_mb": round(peak["largest_pss"] / 1e6, 1),
        "largest_process": peak["largest"],
        "peak_total_rss_mb": round(peak["rss"] / 1e6, 1),  # shared pages counted once per process
        "peak_total_pss_mb": round(peak["pss"] / 1e6, 1),  # shared pages shared out
        "peak_total_uss_mb": round(peak["uss"] / 1e6, 1),  # private pages only
        "returncode": proc.returncode,
    }
    print(json.dumps(result), flush=True)
    (out / f"result-{name}{label}.json").write_text(json.dumps(result, indent=1))
    if not args.keep and not args.baseline:
        shutil.rmtree(result_dir, ignore_errors=True)
    return result


def same_outputs(a: Path, b: Path) -> str:
    """Whether two dedup outputs publish identical files (the manifest without its output path)."""
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file() and "_work" not in p.parts)
    other = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file() and "_work" not in p.parts)
    only = sorted(set(files) ^ set(other))
    common = sorted(set(files) & set(other))

    def manifest(root: Path) -> dict:
        m = json.loads((root / "manifest.json").read_text())
        m.get("config", {}).pop("output", None)
        return m

    differ = [f for f in common if f != "manifest.json" and not filecmp.cmp(a / f, b / f, shallow=False)]
    if manifest(a) != manifest(b):
        differ.append("manifest.json")
    return (f"{len(common) - len(differ)}/{len(common)} common files identical"
            + (f"; differ: {differ[:5]}" if differ else "")
            + (f"; in one output only: {len(only)} files, e.g. {only[:3]}" if only else ""))


def table(results: list[dict]) -> str:
    steps = sorted({k for r in results for k in r["step_s_per_gb"]}, key=lambda k: -max(r["step_s_per_gb"].get(k, 0) for r in results))
    head = ["code", "docs", "GB", "job s/GB", "steps s/GB", *[f"{k}" for k in steps], "largest process PSS MB", "all PSS MB",
            "driver RSS MB"]
    rows = [head]
    for r in results:
        rows.append([r.get("code", ""), f"{r['docs']:,}", f"{r['gb']:.2f}", f"{r['s_per_gb']:.1f}", f"{r['steps_s_per_gb']:.1f}", *[f"{r['step_s_per_gb'].get(k, 0):.1f}" for k in steps],
                     f"{r['peak_largest_process_pss_mb']:.0f}", f"{r['peak_total_pss_mb']:.0f}", f"{r['peak_driver_rss_mb']:.0f}"])
    return "\n".join("| " + " | ".join(row) + " |" for row in [rows[0], ["---"] * len(head), *rows[1:]])


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = [r["docs"] for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(docs, [r["s_per_gb"] for r in results], "o-", label="whole job (with Ray start-up)")
    a.plot(docs, [r["steps_s_per_gb"] for r in results], "s-", label="all steps")
    for step in sorted({k for r in results for k in r["step_s_per_gb"]}):
        a.plot(docs, [r["step_s_per_gb"].get(step, 0) for r in results], ".--", label=step)
    a.set(xscale="log", xlabel="documents", ylabel="wall seconds per GB", title="dedup time per GB (2 cores)")
    a.legend(fontsize=7)
    b.plot(docs, [r["peak_largest_process_pss_mb"] / 1e3 for r in results], "o-", label="largest single process")
    b.plot(docs, [r["peak_total_pss_mb"] / 1e3 for r in results], "s-", label="all processes")
    b.set(xscale="log", xlabel="documents", ylabel="peak PSS (GB)", title="dedup peak memory")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--doc-bytes", type=int, default=2000)
    parser.add_argument("--corpus", default="data/sample")
    parser.add_argument("--out", default="/tmp/dedup_scale")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exact", type=float, default=0.02, help="fraction of documents that are exact copies")
    parser.add_argument("--near", type=float, default=0.03,
                        help="fraction that are edited copies (raise it to see memory against candidate pairs)")
    parser.add_argument("--keep", action="store_true", help="keep each size's corpus and output")
    parser.add_argument("--plot", type=Path, help="write the curve as a PNG")
    parser.add_argument("--baseline", type=Path, help="another checkout to run on the same corpora, for comparison")
    parser.add_argument("override", nargs="*", help="dedup config overrides, e.g. run.partitions=32")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = []
    for docs in args.docs:
        if args.baseline:
            results.append(run_size(args, docs, args.baseline.resolve(), "-baseline"))
        results.append(run_size(args, docs))
        if args.baseline:
            out = Path(args.out)
            print(f"{docs:,} documents, baseline and this checkout: "
                  f"{same_outputs(out / f'dedup-{docs}-baseline', out / f'dedup-{docs}')}", flush=True)
            if not args.keep:
                for label in ("-baseline", ""):
                    shutil.rmtree(out / f"dedup-{docs}{label}", ignore_errors=True)
    print(table(results))
    (Path(args.out) / "scale.json").write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
