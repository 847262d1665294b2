"""The decontamination job: its steps, in order, on the stage kernel (pipeline.kernel).

evalsets (one task: the evaluation n-gram index) -> scan (per corpus file: matches)
-> frequency (one task: n-grams too common in the corpus) -> apply (per corpus file:
policy, output file, ledger part); then the corpus is published, the ledger joined,
report.json and contamination.png written and, last, manifest.json. A killed run
resumes where it stopped; results do not depend on workers or batch sizes.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from common.storage import location, write_json
from pipeline.corpus_io import list_source_files
from pipeline.decontaminate.apply import apply_file, corpus_frequency
from pipeline.decontaminate.config import DecontaminateConfig, content_settings
from pipeline.decontaminate.evalsets import describe
from pipeline.decontaminate.index import build_index
from pipeline.decontaminate.layout import CORPUS, LEDGER, OUTPUTS, PLOT, REPORT, Layout
from pipeline.decontaminate.report import check_counts, format_tables, merge_counts, plot_tasks, task_table
from pipeline.decontaminate.scan import scan_file
from pipeline.dedup.report import write_ledger
from pipeline.kernel import Stage, Task, TaskRunner, file_fingerprint, file_key


def run(cfg: DecontaminateConfig) -> dict:
    """Run (or resume) the stage; returns the report. ``input`` and ``output`` may be
    object-store URLs; the work folder must be on a local disk (its steps map their work
    files), which ``run.work_dir: auto`` gives whenever every task runs on this machine."""
    files = list_source_files(cfg.input)
    if not files:
        raise FileNotFoundError(f"no corpus files (.jsonl, .jsonl.zst, .parquet) under {cfg.input}")
    inputs = [file_fingerprint(sf.path, sf.label) for sf in files]
    settings = content_settings(cfg)
    stage = Stage("decontaminate", cfg.output, settings, {"corpus": inputs, "eval_sets": describe(cfg.eval_sets)},
                  OUTPUTS, work_dir=cfg.run.work_dir)
    if not stage.work_root.is_local:
        raise ValueError(f"decontaminate: its work folder {stage.work_root} must be on a local disk (its steps map "
                         "their work files): run it on one machine (no RAY_ADDRESS) with run.work_dir=auto, or "
                         "name a folder every node shares in run.work_dir")
    if stage.is_complete():
        report = json.loads(location(stage.output / REPORT).read_text())
        print(format_tables(report["sources"], report["tasks"]))
        return report
    stage.begin()
    runner = TaskRunner.from_config(stage, cfg.run)
    layout = Layout(stage.work)
    started, cpu_started = time.time(), time.process_time()

    def per_file():
        return [Task(file_key(f), (cfg, layout, f, sf), sf.label, inputs[f]) for f, sf in enumerate(files)]

    index = runner.run("evalsets", build_index, [Task("index", (cfg, layout))],
                       {k: settings[k] for k in ("eval_sets", "text_field", "ngrams")})[0]
    scanned = runner.run("scan", scan_file, per_file(), {"ngrams": settings["ngrams"]})
    frequency = runner.run("frequency", corpus_frequency, [Task("all", (cfg, layout, len(files)))], settings)[0]
    counts = runner.run("apply", apply_file, per_file(), settings)
    stage.publish(layout.corpus(), CORPUS)
    write_ledger([layout.ledger_part(f) for f in range(len(files))], stage.output / LEDGER)
    sources = merge_counts(counts)
    check_counts(sources)
    z = np.load(layout.frequency(), allow_pickle=False)
    tasks = task_table(layout.items(), z["found"], _item_documents(layout, len(files), len(z["found"])), cfg.ngrams.n)
    wall, cpu = time.time() - started, _cpu(runner, cpu_started)
    report = {
        "sources": {k: v for k, v in sources.items() if k != "TOTAL"}, "total": sources["TOTAL"], "tasks": tasks,
        "ngrams": {"n": cfg.ngrams.n, "eval_ngrams": index["ngrams"],
                   "left_out_frequent_in_eval": index["frequent_in_eval"],
                   "max_eval_items": cfg.ngrams.max_eval_items,
                   "left_out_frequent_in_corpus": frequency["frequent_in_corpus"],
                   "max_corpus_docs": cfg.ngrams.max_corpus_docs, "found_in_corpus": frequency["found"]},
        "policy": settings["policy"], "eval_sets": cfg.eval_sets, "items": index["items"],
        "documents_scanned": sum(r["docs"] for r in scanned),
    }
    write_json(stage.output / REPORT, report)
    plot_tasks(tasks, stage.output / PLOT)
    print(format_tables(sources, tasks))
    mb = sources["TOTAL"]["bytes_in"] / 1e6
    print(f"decontaminate: {mb:,.1f} MB in {wall:,.1f} s, {mb / max(cpu, 1e-9):.2f} MB/s per CPU-second; "
          f"n-grams left out: {index['frequent_in_eval']:,} frequent in the evaluation sets "
          f"(> {cfg.ngrams.max_eval_items} items), {frequency['frequent_in_corpus']:,} in the corpus "
          f"(> {cfg.ngrams.max_corpus_docs} documents) -> {stage.output}", file=sys.stderr)
    if stage.work.exists():
        write_json(stage.work / "timings.json", {"wall_seconds": wall, "cpu_seconds": cpu, "bytes_in": sources["TOTAL"]["bytes_in"],
                                                 "stages": runner.timings})
    manifest = {"stage": "decontaminate", "input": str(cfg.input),
                "outputs": {"corpus": CORPUS, "ledger": LEDGER, "report": REPORT, "plot": PLOT},
                "config": settings, "documents": sources["TOTAL"]["docs_in"]}
    stage.finish(manifest, keep_work=cfg.run.keep_work)
    return report


def _item_documents(layout: Layout, files: int, items: int) -> np.ndarray:
    """Contaminated documents per evaluation item, over every file."""
    docs = np.zeros(items, dtype=np.int64)
    for f in range(files):
        z = np.load(layout.item_docs(f), allow_pickle=False)
        np.add.at(docs, z["items"], z["docs"])
    return docs


def _cpu(runner: TaskRunner, cpu_started: float) -> float:
    return sum(c for _, c in runner.timings.values()) + time.process_time() - cpu_started
