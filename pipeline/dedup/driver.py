"""The dedup job: its steps, in order, on the stage kernel (pipeline.kernel).

Each step is a module of this package; its tasks run on Ray and write only under
``<output>/_work/<step>/``. A killed run resumes where it stopped, a dead worker's task
is retried, and every result is sorted by document id, so the outputs are identical
for any number of workers, partitions or batch sizes.
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from pathlib import Path

from common.atomic import write_json
from pipeline.corpus_io import SourceFile, list_source_files
from pipeline.dedup.candidates import bands_file, lsh_partition
from pipeline.dedup.clusters import run_components
from pipeline.dedup.config import DedupStageConfig, band_layout, content_settings, work_settings
from pipeline.dedup.exact import exact_partition
from pipeline.dedup.layout import CORPUS, LEDGER, OUTPUTS, QUARANTINE, REPORT, Layout, part_key
from pipeline.dedup.prepare import file_offsets, prepare_file
from pipeline.dedup.report import build_report, format_table, write_ledger, write_quarantine
from pipeline.dedup.verify import shingles_file, verify_partition
from pipeline.dedup.write import chunk_prefixes, write_file
from pipeline.kernel import Stage, StopAfter, Task, TaskRunner, file_fingerprint, file_key


def run_dedup(cfg: DedupStageConfig, stop_after: str | None = None) -> dict:
    """Run (or resume) the stage; returns the report. ``stop_after`` ends the run after
    that step (tests use it to interrupt a job)."""
    files = list_source_files(cfg.input)
    if not files:
        raise FileNotFoundError(f"no corpus files (.jsonl, .jsonl.zst, .parquet) under {cfg.input}")
    inputs = [file_fingerprint(sf.path, sf.label) for sf in files]
    stage = Stage("dedup", cfg.output, work_settings(cfg), inputs, OUTPUTS)
    if stage.is_complete():
        report = _read_report(stage.output)
        print(format_table(report["sources"]))
        return report
    stage.begin()
    runner = TaskRunner.from_config(stage, cfg.run, stop_after)
    started, cpu_started = time.time(), time.process_time()
    try:
        report = _run_steps(cfg, stage, runner, Layout(stage.work), files, inputs)
    except StopAfter:
        return {}
    _print_timing(runner, report, stage, started, cpu_started)
    return report


def _run_steps(cfg: DedupStageConfig, stage: Stage, runner: TaskRunner, layout: Layout,
               files: list[SourceFile], inputs: list[dict]) -> dict:
    step = partial(runner.run, settings=work_settings(cfg))

    def per_file(args) -> list[Task]:
        return [Task(file_key(i), args(i, sf), sf.label) for i, sf in enumerate(files)]

    prepared = step("prepare", prepare_file,
                    [Task(file_key(i), (cfg, layout, i, sf), sf.label, inputs[i]) for i, sf in enumerate(files)])
    offsets = file_offsets([r["docs"] for r in prepared])
    per_partition = [Task(part_key(p), (cfg, layout, p, offsets)) for p in range(cfg.run.partitions)]
    if cfg.duplicates.exact:
        step("exact", exact_partition, per_partition)
    candidates = verified = []
    if cfg.duplicates.near:
        step("bands", bands_file, per_file(lambda i, sf: (cfg, layout, i, offsets)))
        candidates = verified = step("lsh", lsh_partition, per_partition)
        if cfg.lsh.verify == "exact":
            step("shingles", shingles_file, per_file(lambda i, sf: (cfg, layout, i, offsets)))
            verified = step("verify", verify_partition, per_partition)
    run_components(step, cfg, layout, offsets, files=len(files))
    labels, prefixes = [sf.label for sf in files], chunk_prefixes(files)
    counts = step("write", write_file, per_file(lambda i, sf: (cfg, layout, i, sf, offsets, labels, prefixes[i])))

    out = stage.output
    stage.publish(layout.corpus(), CORPUS)
    write_ledger([layout.ledger_part(i) for i in range(len(files))], out / LEDGER)
    write_quarantine([layout.table(i) for i in range(len(files))], files, out / QUARANTINE)
    report = build_report(counts, files=len(files), documents=int(offsets[-1]))
    write_json(out / REPORT, report)
    print(format_table(report["sources"]))
    if candidates:
        bands, rows = band_layout(cfg)
        print(f"dedup: LSH {bands} bands x {rows} rows: {sum(r['candidates'] for r in candidates):,} candidate pairs, "
              f"{sum(r['edges'] for r in verified):,} verified", file=sys.stderr)
    manifest = {
        "stage": "dedup",
        "input": str(cfg.input),
        "outputs": {"corpus": CORPUS, "ledger": LEDGER, "report": REPORT,
                    "quarantine": QUARANTINE},
        "config": content_settings(cfg),  # what was computed; the run section (how) changes no output
        "documents": report["documents"],
    }
    stage.finish(manifest, keep_work=cfg.run.keep_work)
    return report


def _print_timing(runner: TaskRunner, report: dict, stage: Stage, started: float, cpu_started: float) -> None:
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
    if stage.work.exists():
        write_json(Layout(stage.work).timings(), {"wall_seconds": wall, "cpu_seconds": cpu, "stages": timings,
                                                  "bytes_in": report["total"]["bytes_in"]})


def _read_report(output: Path) -> dict:
    return json.loads((output / REPORT).read_text(encoding="utf-8"))
