"""Benchmark: the tokenize stage against tiktoken on the same text, in the same run.

    python bench/bench_tokenize.py [CORPUS] [--repeats 3] [--cpus 2] [--max-mb 12]

CORPUS defaults to data/dedup/corpus (or data/sample when dedup has not run); the first
``--max-mb`` MB of its documents (in corpus order, every source kept in its own folder)
are copied to a temporary corpus so that all measurements see the same text. Prints the
median MB/s (UTF-8 text bytes per second) of:

- tiktoken (GPT-2 ranks) encode_ordinary_batch with 1 and 2 threads: the reference rate;
- tokenizers encode_batch_fast with 1 and 2 threads (the library behind tokenizer.json);
- the whole stage (read, split, encode, pack, shuffle, write) with each encoder, on a
  Ray instance started before timing; and the share of packing + writing in it.

Needs the bench extra (tiktoken). Timings are noisy on a shared machine: medians of
``--repeats`` runs, and ratios taken within the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.config import load_config  # noqa: E402
from pipeline.corpus_io import Document, iter_file, list_source_files  # noqa: E402
from pipeline.corpus_write import ChunkWriter  # noqa: E402
from pipeline.kernel import init_ray  # noqa: E402
from pipeline.tokenize import DEFAULT_CONFIG, TokenizeConfig, run  # noqa: E402
from pipeline.tokenizer import Encoder  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--max-mb", type=float, default=12.0, help="text taken from the corpus (0: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    source = args.corpus or next(p for p in (REPO / "data/dedup/corpus", REPO / "data/sample") if p.is_dir())
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        texts = copy_corpus(source, corpus, args.max_mb)
        bench(corpus, texts, args)


def copy_corpus(source: Path, target: Path, max_mb: float) -> list[str]:
    """Round-robin over source files up to max_mb of text, so every source is represented."""
    files = list_source_files(source)
    streams = [(sf, iter_file(sf)) for sf in files]
    writers: dict[str, ChunkWriter] = {}
    texts: list[str] = []
    total = 0
    while streams and (max_mb <= 0 or total < max_mb * 1e6):
        for entry in list(streams):
            sf, items = entry
            item = next(items, None)
            if item is None:
                streams.remove(entry)
                continue
            if isinstance(item, Document):
                writer = writers.setdefault(sf.folder, ChunkWriter(target / sf.folder, max_bytes=4_000_000))
                writer.write(item.record)
                texts.append(item.text)
                total += item.nbytes
    for writer in writers.values():
        writer.close()
    return texts


def bench(corpus: Path, texts: list[str], args: argparse.Namespace) -> None:
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"{len(texts):,} documents, {mb:.1f} MB of text; {args.repeats} repeats, {args.cpus} CPUs")

    rates: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        rates.setdefault(name, []).append(mb / seconds)

    init_ray(args.cpus)
    stage_parts: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for threads in (1, 2):
            tk = Encoder("tiktoken", threads=threads)
            record(f"tiktoken {threads} thread(s)", timed(lambda: tk.encode_ids(texts)))
            hf = Encoder("tokenizers", threads=threads)
            record(f"tokenizers {threads} thread(s)", timed(lambda: hf.encode_ids(texts)))
        for encoder in ("tokenizers", "tiktoken"):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = load_config(TokenizeConfig, REPO / DEFAULT_CONFIG, [f"input={corpus}", f"output={tmp}/tokens", f"run.encoder={encoder}", "run.progress=false"])
                report = run(cfg)
            t = report["timing"]
            rates.setdefault(f"stage, encoder={encoder}", []).append(t["input_bytes"] / 1e6 / t["wall_s"])
            stage_parts.setdefault(encoder, []).append(t["pack_write_wall_s"] / t["wall_s"])

    med = {name: statistics.median(v) for name, v in rates.items()}
    reference = rates["tiktoken 2 thread(s)"]
    # Ratios per repeat (same moment, same load), then their median: robust to a busy machine.
    ratio = {name: statistics.median(x / r for x, r in zip(v, reference)) for name, v in rates.items()}
    print(f"\n{'what':<34} {'median MB/s':>11} {'median ratio to tiktoken 2 threads':>36}")
    for name, value in med.items():
        print(f"{name:<34} {value:>11.2f} {ratio[name]:>36.2f}")
    for encoder, shares in stage_parts.items():
        print(f"packing + writing share of the stage's wall time (encoder={encoder}): median {statistics.median(shares):.1%}")
    if args.json:
        args.json.write_text(json.dumps({"corpus_mb": mb, "rates": rates, "median": med, "median_ratio": ratio, "pack_write_share": stage_parts}, indent=2))

if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
