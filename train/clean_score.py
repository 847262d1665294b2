"""The clean score: a task scored again on only its items the training corpus does not hold.

``make eval decontamination=DIR`` reads the decontamination stage's report
(``DIR/report.json``, from ``make decontaminate``), which lists per task the items
whose n-grams a training document contains (by their position in the task's
evaluation documents and a SHA-256 of each document). The task is then evaluated a
second time with lm-eval's own ``samples`` selection over the other items, and both
scores are reported side by side (GPT-3's "clean" versus full comparison): a clean
score well below the full one says contamination inflated it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


class CleanScoreError(ValueError):
    """The report does not fit the tasks being scored; the message says how."""


def doc_sha256(doc: Any) -> str:
    """How the decontamination stage names an item's document (pipeline/decontaminate/evalsets.py)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")).hexdigest()


def read_contaminated(path: str | Path) -> dict[str, list[dict]]:
    """Task -> its contaminated items, from a decontamination output folder or its report.json."""
    path = Path(path)
    report_path = path / "report.json" if path.is_dir() else path
    if not report_path.is_file():
        raise CleanScoreError(f"decontamination report {report_path} does not exist (run `make decontaminate`)")
    tasks = json.loads(report_path.read_text(encoding="utf-8")).get("tasks")
    if not isinstance(tasks, dict):
        raise CleanScoreError(f"{report_path} is not a decontamination report (no 'tasks')")
    return {task: t["contaminated_items"] for task, t in tasks.items()}


def selections(contaminated: dict[str, list[dict]], docs: dict[str, list], limit: int | None) -> dict[str, dict]:
    """Per task the report checked: the indices scored in full and clean (lm-eval's
    ``samples``), after checking that each listed item is the same document."""
    out = {}
    for task, task_docs in docs.items():
        if task not in contaminated:
            continue
        dirty = set()
        for item in contaminated[task]:
            i = item["index"]
            if i >= len(task_docs) or doc_sha256(task_docs[i]) != item["sha256"]:
                raise CleanScoreError(f"task {task}: item {i} of the decontamination report is not this task's "
                                      f"document {i} (the report was made from other task data: run it again)")
            dirty.add(i)
        full = list(range(len(task_docs) if limit is None else min(limit, len(task_docs))))
        out[task] = {"full": full, "clean": [i for i in full if i not in dirty]}
    return out


def task_documents(names: list[str], task_manager: Any) -> dict[str, list]:
    """Evaluation documents of each task, through lm-eval's task API (as the stage read them)."""
    from lm_eval.tasks import get_task_dict

    out = {}

    def walk(tasks: dict) -> None:
        for key, value in tasks.items():
            if isinstance(value, dict):
                walk(value)
            else:
                out[getattr(key, "group_name", None) or str(key)] = list(value.eval_docs)

    walk(get_task_dict(names, task_manager))
    return out


def compare(full: dict[str, dict], clean: dict[str, dict], chosen: dict[str, dict]) -> dict[str, dict]:
    """Per task and metric: full and clean value, and the item counts."""
    out = {}
    for task, sel in chosen.items():
        metrics = {}
        for metric, value in full.get(task, {}).items():
            other = clean.get(task, {}).get(metric, value if len(sel["clean"]) == len(sel["full"]) else None)
            metrics[metric] = {"full": value["value"], "clean": None if other is None else other["value"],
                               "clean_stderr": None if other is None else other["stderr"]}
        out[task] = {"items": len(sel["full"]), "clean_items": len(sel["clean"]), "metrics": metrics}
    return out


def print_comparison(comparison: dict[str, dict]) -> None:
    print(f"\n{'task (decontaminated)':<28} {'metric':<10} {'full':>8} {'clean':>8} {'change':>8} {'n':>6} {'n clean':>8}")
    for task, t in comparison.items():
        for metric, v in t["metrics"].items():
            clean = "" if v["clean"] is None else f"{v['clean']:.4f}"
            change = "" if v["clean"] is None else f"{v['clean'] - v['full']:+.4f}"
            print(f"{task:<28} {metric:<10} {v['full']:>8.4f} {clean:>8} {change:>8} {t['items']:>6} {t['clean_items']:>8}")
