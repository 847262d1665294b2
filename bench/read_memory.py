"""Resident memory while streaming a multi-GB corpus through corpus_io.read_corpus.

Generates (once) a corpus of ``--gb`` GB of uncompressed JSONL in ``.jsonl.zst`` chunks,
made of real text (the Python standard library's sources) repeated with a varying header
line so no two documents are equal, with a few bad lines mixed in. Then reads it back,
sampling the process's RSS every ``--every`` records, and prints RSS at start, middle
and end plus throughput.

    python bench/read_memory.py --out /tmp/read_memory_corpus --gb 3
"""

from __future__ import annotations

import argparse
import json
import sysconfig
import time
from pathlib import Path

import psutil
import zstandard

from pipeline.corpus_io import Document, read_corpus

CHUNK_BYTES = 256 << 20  # uncompressed bytes per generated chunk
BAD_EVERY = 100_000  # one invalid JSON line per this many records


def base_texts(limit_bytes: int = 32 << 20) -> list[str]:
    """JSON-escaped bodies of real documents: standard library sources, sorted."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    bodies, total = [], 0
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not text.strip() or len(text) > 200_000:
            continue
        bodies.append(json.dumps(text, ensure_ascii=False)[1:-1])
        total += len(text)
        if total >= limit_bytes:
            break
    return bodies


def generate(out: Path, total_bytes: int) -> None:
    bodies = base_texts()
    folders = ["alpha", "beta", "gamma"]
    cctx = zstandard.ZstdCompressor(level=3, threads=2)
    written, record, chunk_no = 0, 0, 0
    t0 = time.time()
    while written < total_bytes:
        folder = out / folders[chunk_no % len(folders)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"chunk-{chunk_no:05d}.jsonl.zst"
        tmp = path.with_name(path.name + ".tmp")
        chunk_bytes = 0
        with open(tmp, "wb") as fh, cctx.stream_writer(fh) as zw:
            while chunk_bytes < CHUNK_BYTES and written + chunk_bytes < total_bytes:
                record += 1
                if record % BAD_EVERY == 0:
                    line = '{"text": "a bad line with no end\n'
                else:
                    body = bodies[record % len(bodies)]
                    line = (
                        f'{{"text": "# copy {record} of a real file\\n{body}", '
                        f'"meta": {{"redpajama_set_name": "Bench{folder.name.title()}", "n": {record}}}}}\n'
                    )
                data = line.encode("utf-8")
                zw.write(data)
                chunk_bytes += len(data)
        tmp.rename(path)
        written += chunk_bytes
        chunk_no += 1
        print(f"  generated {written / 1e9:.2f} GB ({time.time() - t0:.0f} s)", flush=True)
    (out / "DONE").write_text(json.dumps({"requested": total_bytes, "written": written}) + "\n")


def measure(out: Path, every: int) -> dict:
    proc = psutil.Process()
    samples: list[tuple[int, int]] = []  # (records read, rss bytes)
    docs = rejected = text_bytes = 0
    rss_before = proc.memory_info().rss
    t0, cpu0 = time.time(), time.process_time()
    for i, item in enumerate(read_corpus(out), 1):
        if isinstance(item, Document):
            docs += 1
            text_bytes += len(item.text)
        else:
            rejected += 1
        if i % every == 0:
            samples.append((i, proc.memory_info().rss))
    elapsed, cpu = time.time() - t0, time.process_time() - cpu0
    rss_after = proc.memory_info().rss
    compressed = sum(p.stat().st_size for p in out.rglob("*.jsonl.zst"))
    return {
        "documents": docs,
        "rejected": rejected,
        "text_chars": text_bytes,
        "compressed_bytes": compressed,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "rss_before_mb": rss_before / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/read_memory_corpus", help="where the generated corpus lives")
    parser.add_argument("--gb", type=float, default=3.0, help="uncompressed JSONL size to generate")
    parser.add_argument("--every", type=int, default=2000, help="sample RSS every N records")
    parser.add_argument("--json", help="also write the result (with all RSS samples) to this file")
    args = parser.parse_args()
    out = Path(args.out)
    total = int(args.gb * 1e9)
    done = out / "DONE"
    if not (done.exists() and json.loads(done.read_text())["requested"] == total):
        print(f"generating {args.gb} GB of JSONL (.jsonl.zst) in {out}")
        generate(out, total)
    uncompressed = json.loads(done.read_text())["written"]
    res = measure(out, args.every)
    rss = [r for _, r in res["samples"]]  # sampled while reading
    start, middle, end = rss[0], rss[len(rss) // 2], rss[-1]
    mb = 2**20
    print(f"records: {res['documents']:,} documents + {res['rejected']:,} rejected, {len(rss)} RSS samples")
    print(f"RSS before reading {res['rss_before_mb']:.0f} MiB, after {res['rss_after_mb']:.0f} MiB")
    print(
        f"RSS while reading: start {start / mb:.0f} MiB | middle {middle / mb:.0f} MiB | end {end / mb:.0f} MiB | "
        f"min {min(rss) / mb:.0f} | max {max(rss) / mb:.0f} MiB | growth start->end {(end - start) / mb:+.1f} MiB"
    )
    print(
        f"throughput: {uncompressed / 1e6 / res['seconds']:.0f} MB/s of JSONL "
        f"({res['compressed_bytes'] / 1e6 / res['seconds']:.0f} MB/s compressed), "
        f"{res['documents'] / res['seconds']:.0f} docs/s, {res['seconds']:.0f} s wall"
    )
    # CPU time is what the reader costs; wall time also counts other work on a shared machine.
    print(
        f"per CPU second: {uncompressed / 1e6 / res['cpu_seconds']:.0f} MB/s of JSONL "
        f"({res['cpu_seconds']:.0f} s CPU)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
