"""`make decontaminate`: word n-gram overlap of the cleaned corpus with evaluation sets.

    python -m pipeline.decontaminate [--config configs/data/decontaminate.yaml] [key=value ...]

GPT-3's 13-gram overlap analysis, as lm-evaluation-harness's janitor keeps it: words
lowercased, ASCII punctuation removed; a training document that shares an n-gram with
an evaluation item is contaminated by that item's task. Policies: ``flag`` (keep,
record), ``remove``, ``redact`` (cut the matched spans with a 200-character window).

Where it sits: a stage of its own between dedup and tokenize. It reads the dedup
output's corpus and writes the same layout, so tokenize reads it unchanged
(``tokenize input=data/decontam/corpus``). Not inside dedup, because the evaluation
sets change far more often than the corpus: a new benchmark reruns only this stage,
never MinHash. Not inside tokenize, because tokenize's train/holdout split must see
the corpus after decontamination, and this stage's own ledger and report (which items
of which task are in the corpus) are what ``make eval`` needs for a clean score.

Steps (one module each, paths in layout.py): evalsets (index.py), scan (scan.py),
frequency and apply (apply.py), then the ledger, report.json and contamination.png
(report.py) and, last, manifest.json (driver.py). Evaluation sets are read by
evalsets.py; lm-eval is imported there, inside a function, only for task names and
task YAMLs (the optional ``eval`` extra).
"""

from pipeline.decontaminate.config import DecontaminateConfig
from pipeline.decontaminate.driver import run

__all__ = ["DecontaminateConfig", "run"]
