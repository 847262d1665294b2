"""Build the sample corpus: one Ray task per source on the stage kernel.

Each task orders its source's files (find.py), renders them (render.py) and writes
``chunk-NNNNN.jsonl.zst`` in its step folder until the source's byte budget is full;
the stage then publishes one folder per source and writes ``manifest.json`` last.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from common.config import to_dict
from common.storage import Location, location
from pipeline.corpus_write import ChunkWriter
from pipeline.kernel import Stage, Task, TaskRunner
from pipeline.sample.config import SampleConfig
from pipeline.sample.find import Candidate, find_candidates, order_candidates, resolve_roots
from pipeline.sample.render import GROFF, Skip, load_document

MANIFEST = "manifest.json"
MANIFEST_KIND = "sample-corpus"


def ordered_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``map`` over a thread pool, in order, with a bounded look-ahead (stop early freely)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        window: deque[Future] = deque()
        try:
            for item in items:
                window.append(pool.submit(fn, item))
                if len(window) >= 4 * workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for fut in window:
                fut.cancel()


@dataclass
class SourceStats:
    candidates: int = 0
    documents: int = 0
    bytes: int = 0
    budget: int = 0
    chunks: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def build_source(cfg: SampleConfig, name: str, out_dir: Path | Location) -> dict:
    """One source's documents as chunks in ``out_dir``; returns its statistics."""
    src = cfg.sources[name]
    stats = SourceStats(budget=int(cfg.max_total_bytes * src.share))
    cands = order_candidates(find_candidates(src, resolve_roots(cfg.input)), src.order, cfg.seed)
    stats.candidates = len(cands)
    skipped: Counter[str] = Counter()
    misses = 0

    def load(cand: Candidate) -> tuple[Candidate, str | None, str | None]:
        try:
            return cand, load_document(cand, cfg.max_doc_bytes), None
        except Skip as why:
            return cand, None, str(why)

    with ChunkWriter(out_dir, prefix="chunk", max_bytes=cfg.chunk_bytes) as writer:
        for cand, text, reason in ordered_map(load, cands, cfg.workers):
            if text is None:
                skipped[reason or "unknown"] += 1
                continue
            size = len(text.encode("utf-8"))
            if stats.bytes + size > stats.budget:
                # Pass over a document that does not fit; a run of them means the budget is full.
                misses += 1
                if misses >= cfg.fill_attempts:
                    break
                continue
            misses = 0
            writer.write({"text": text, "meta": {"source": name, "origin": cand.clean_origin}})
            stats.documents += 1
            stats.bytes += size
    stats.chunks = [p.name for p in writer.files]
    stats.skipped = dict(sorted(skipped.items()))
    return asdict(stats)


def run(cfg: SampleConfig) -> dict:
    """Build the corpus at ``cfg.output``; returns the manifest.

    The machine's files cannot be fingerprinted cheaply, so every run builds the corpus
    again (the same machine and config give the same bytes). ``output`` may be an
    object-store URL (credentials from the standard environment)."""
    output = location(cfg.output)
    _check_replaceable(output)
    names = [name for name, src in cfg.sources.items() if src.share > 0]
    # all but the work folder, which stays in the output: an interrupted build is recognised by it
    stage = Stage("corpus", output, to_dict(cfg), inputs=None, outputs=("[!_]*",), work_dir="output")
    stage.begin()
    runner = TaskRunner(stage, num_cpus=None, progress=True, retries=1)
    folder = stage.step_dir("sources")
    stats = runner.run("sources", build_source, [Task(name, (cfg, name, folder / name), name) for name in names],
                       settings=to_dict(cfg))
    for name in names:
        stage.publish(folder / name, name)
    manifest = {
        "kind": MANIFEST_KIND,
        "format": "jsonl.zst",
        "renderer": {"man": "groff" if GROFF else "builtin"},
        "sources": dict(zip(names, stats)),
        "total": {"documents": sum(s["documents"] for s in stats), "bytes": sum(s["bytes"] for s in stats)},
        "config": to_dict(cfg),
    }
    stage.finish(manifest, keep_work=False, indent=2, sort_keys=True)  # last: marks the corpus complete
    return manifest


def _check_replaceable(output: Location) -> None:
    """Only an earlier sample corpus (or an empty folder) may be replaced."""
    if not output.exists():
        return
    if not output.is_dir():
        raise SystemExit(f"output {output} exists and is not a folder")
    manifest = output / MANIFEST
    if not (any(output.local_path.iterdir()) if output.is_local else output.list_files()):
        return
    try:
        if json.loads(manifest.read_text()).get("kind") == MANIFEST_KIND:
            return
    except (OSError, ValueError):
        pass
    if (output / "_work").is_dir():  # a build that was interrupted
        return
    raise SystemExit(f"output {output} exists and is not a sample corpus built by this stage; not replacing it")


def format_table(manifest: dict) -> str:
    rows = [("source", "documents", "MB", "budget MB", "skipped")]
    for name, s in sorted(manifest["sources"].items()):
        skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "-"
        rows.append((name, str(s["documents"]), f"{s['bytes'] / 1e6:.2f}", f"{s['budget'] / 1e6:.2f}", skipped))
    total = manifest["total"]
    rows.append(("total", str(total["documents"]), f"{total['bytes'] / 1e6:.2f}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in (1, 2, 3)] + [r[4]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
