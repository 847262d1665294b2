"""The dedup job: its steps, in order, on the stage kernel (pipeline.kernel).

Each step is a module of this package; its tasks run on Ray and write only under
``<output>/_work/<step>/``; where a step's tasks each write rows for every task of a
later step, merge steps between them group those rows (exchange.py). A killed run resumes where it stopped, a dead worker's task
is retried, and every result is sorted by document id, so the outputs are identical
for any number of workers, partitions or batch sizes.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from common.storage import Location, location, write_json
from pipeline.corpus_io import SourceFile, list_source_files
from pipeline.dedup.candidates import (
    BAND_ROW,
    IDS,
    REQUEST,
    bands_file,
    estimate_partition,
    lsh_partition,
    signature_row,
    signatures_file,
)
from pipeline.dedup.clusters import run_components
from pipeline.dedup.config import DedupStageConfig, band_layout, content_settings, with_partitions, work_settings
from pipeline.dedup.exact import exact_partition
from pipeline.dedup.exchange import Piece, run_exchange
from pipeline.dedup.layout import CORPUS, INDEX, LEDGER, OUTPUTS, QUARANTINE, REPORT, Layout
from pipeline.dedup.names import ASK, NAME_BYTE, name_file
from pipeline.dedup.prepare import ROUTED_HASH_DTYPE, file_offsets, prepare_file
from pipeline.dedup.reference import ReferenceIndex, bridged, load_reference_file, open_reference, write_index_manifest
from pipeline.dedup.report import build_report, format_table, write_ledger, write_quarantine
from pipeline.dedup.steps import FILES, INPUTS, PARTITIONS, REFERENCE, Step, Steps
from pipeline.dedup.verify import HASH, SET_ROW, shingles_file, verify_partition
from pipeline.dedup.write import chunk_prefixes, write_file
from pipeline.kernel import Stage, TaskRunner, digest, file_fingerprint


def run(cfg: DedupStageConfig) -> dict:
    """Run (or resume) the stage; returns the report."""
    files = list_source_files(cfg.input, cfg.storage)
    if not files:
        raise FileNotFoundError(f"no corpus files (.jsonl, .jsonl.zst, .parquet) under {cfg.input}")
    reference = open_reference(cfg) if cfg.reference else None
    inputs = [file_fingerprint(sf.path, sf.label) for sf in files]
    cfg = with_partitions(cfg, sum(i["size"] for i in inputs))
    if reference is not None:
        inputs.append({"reference": str(reference.folder), "index": digest(reference.manifest)})
    stage = Stage("dedup", cfg.output, work_settings(cfg), inputs, OUTPUTS, cfg.storage, cfg.run.work_dir)
    if stage.is_complete():
        report = _read_report(stage.root)
        print(format_table(report["sources"]))
        return report
    stage.begin()
    runner = TaskRunner.from_config(stage, cfg.run)
    started, cpu_started = time.time(), time.process_time()
    layout = Layout(stage.work_root, len(reference.parts) if reference is not None else 0)
    steps = Steps(runner, cfg, layout, reference.parts if reference is not None else [], files, inputs)
    counts, offsets, candidates = _run_steps(cfg, steps, reference)
    report = _write_outputs(cfg, stage, layout, files, counts, offsets, candidates)
    _print_timing(runner, steps.requests, report, stage, started, cpu_started)
    return report


def _run_steps(cfg: DedupStageConfig, steps: Steps,
               reference: ReferenceIndex | None) -> tuple[list[dict], np.ndarray, tuple[int, int]]:
    """The steps in order; returns the write step's counts per input file, the file
    offsets and (candidate pairs, verified pairs). File numbers: the reference's index
    parts first (none without a reference), then the input files."""
    refs, layout, P = steps.reference_parts, steps.layout, cfg.run.partitions
    counts = steps(Step("reference", load_reference_file, REFERENCE, lambda f: (refs[f],))) if refs else []
    prepared = steps(Step("prepare", prepare_file, INPUTS, lambda f: (steps.source(f),), reads_input=True))
    offsets = file_offsets([r["docs"] for r in counts + prepared])
    numbers = range(len(offsets) - 1)  # every file's number: reference parts, then inputs
    nonrep = None
    if cfg.duplicates.exact:
        hashes = run_exchange(steps, "hash", [layout.hash_rows(f) for f in numbers], P, ROUTED_HASH_DTYPE)
        steps(Step("exact", exact_partition, PARTITIONS, lambda p: (offsets, hashes.piece(p))))
        nonrep = run_exchange(steps, "nonrep", [layout.nonrep(p) for p in range(P)], len(numbers), IDS)
    candidates = verified = []
    if cfg.duplicates.near:
        steps(Step("bands", bands_file, FILES, lambda f: (offsets, nonrep.piece(f) if nonrep is not None else None)))
        bands = run_exchange(steps, "bands", [layout.bands(f) for f in numbers], P, BAND_ROW)
        candidates = verified = steps(Step("lsh", lsh_partition, PARTITIONS, lambda p: (offsets, bands.piece(p))))
        if cfg.lsh.verify != "none":
            wanted = run_exchange(steps, "wanted", [layout.wanted(p) for p in range(P)], len(numbers), REQUEST)
            steps(Step("signatures", signatures_file, FILES, lambda f: (offsets, wanted.piece(f))))
            signatures = run_exchange(steps, "signatures", [layout.signature_rows(f) for f in numbers], P,
                                      signature_row(cfg.minhash.num_perm))
            verified = steps(Step("estimate", estimate_partition, PARTITIONS, lambda p: (offsets, signatures.piece(p))))
        if cfg.lsh.verify == "exact":

            def texts(f: int) -> tuple[str, str] | None:  # where a reference file's texts are
                return (str(reference.corpus), str(refs[f])) if f < len(refs) else None

            unsure = run_exchange(steps, "unsure", [layout.unsure(p) for p in range(P)], len(numbers), REQUEST)
            parts = steps(Step("shingles", shingles_file, FILES, lambda f: (offsets, texts(f), unsure.piece(f))))
            written = [(f, k) for f, r in zip(numbers, parts) for k in range(r["parts"])]
            sets = run_exchange(steps, "sets", [layout.shingle_sets(f, k) for f, k in written], P, SET_ROW)
            hashes = run_exchange(steps, "shingles", [layout.shingle_part(f, k) for f, k in written], P, HASH)
            verified = steps(Step("verify", verify_partition, PARTITIONS,
                                  lambda p: (offsets, sets.piece(p), hashes.piece(p))))
    clustered = run_components(steps, offsets, nonrep)
    inputs = steps.numbers(INPUTS)
    names = [*map(str, refs), *(sf.label for sf in steps.files)]  # how documents are named in kept_id
    asked = run_exchange(steps, "asked", [layout.name_requests(f) for f in inputs], len(numbers), ASK)
    steps(Step("names", name_file, FILES, lambda g: (offsets, names[g], asked.piece(g))))
    named = run_exchange(steps, "named", [layout.names(g) for g in numbers], len(numbers), NAME_BYTE)

    def answers(f: int) -> Piece | None:  # none to read for a file without duplicates
        return named.piece(f) if clustered[f - inputs.start]["removed"] else None

    prefixes = chunk_prefixes(steps.files)
    counts = steps(Step("write", write_file, INPUTS,
                        lambda f: (steps.source(f), offsets, answers(f), prefixes[f - len(refs)])))
    return counts, offsets, (sum(r["candidates"] for r in candidates), sum(r["edges"] for r in verified))


def _write_outputs(cfg: DedupStageConfig, stage: Stage, layout: Layout, files: list[SourceFile], counts: list[dict],
                   offsets: np.ndarray, candidates: tuple[int, int]) -> dict:
    """Publish the corpus and index, join the ledger, write quarantine, report and, last, the manifest."""
    out, R = stage.root, layout.reference_files
    new = range(R, R + len(files))
    stage.publish(layout.corpus(), CORPUS)
    write_index_manifest(cfg, layout.index(), list(new))
    stage.publish(layout.index(), INDEX)
    write_ledger([layout.ledger_part(f) for f in new], out / LEDGER)
    write_quarantine([layout.table(f) for f in new], files, out / QUARANTINE)
    report = build_report(counts, files=len(files), documents=int(offsets[-1] - offsets[R]))
    if R:  # incremental: what it ran against, and the bridging case it counts
        report["incremental"] = bridged(layout, cfg.run.partitions, location(cfg.reference, cfg.storage))
    write_json(out / REPORT, report)
    print(format_table(report["sources"]))
    if cfg.duplicates.near:
        bands, rows = band_layout(cfg)
        print(f"dedup: LSH {bands} bands x {rows} rows: {candidates[0]:,} candidate pairs, {candidates[1]:,} verified",
              file=sys.stderr)
    manifest = {
        "stage": "dedup",
        "input": str(cfg.input),
        "outputs": {"corpus": CORPUS, "ledger": LEDGER, "report": REPORT, "quarantine": QUARANTINE, "index": INDEX},
        "config": content_settings(cfg),  # what was computed; the run section (how) changes no output
        "documents": report["documents"],
    }
    stage.finish(manifest, keep_work=cfg.run.keep_work)
    return report


def _print_timing(runner: TaskRunner, requests: dict[str, dict[str, int]], report: dict, stage: Stage,
                  started: float, cpu_started: float) -> None:
    wall = time.time() - started
    print(f"dedup: {report['total']['bytes_in'] / 1e6:,.1f} MB in {wall:,.1f} s -> {stage.output}", file=sys.stderr)
    if not runner.timings:
        return
    timings = runner.timings
    cpu = sum(c for _, c in timings.values()) + time.process_time() - cpu_started
    print("dedup: wall / CPU seconds per step: " + ", ".join(f"{k} {w:.1f}/{c:.1f}" for k, (w, c) in timings.items()),
          file=sys.stderr)
    print(f"dedup: {report['total']['bytes_in'] / 1e6 / max(cpu, 1e-9):.2f} MB/s per CPU-second (tasks + driver)",
          file=sys.stderr)
    if stage.work_root.exists():
        # requests: storage requests per step through the layout helpers, by kind (steps
        # resumed from an earlier run count that run's)
        write_json(Layout(stage.work_root).timings(), {"wall_seconds": wall, "cpu_seconds": cpu, "stages": timings,
                                                       "bytes_in": report["total"]["bytes_in"], "requests": requests})


def _read_report(output: Location) -> dict:
    return json.loads((output / REPORT).read_text())
