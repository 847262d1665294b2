"""Evaluation sets as items of text: lm-eval tasks, task YAML files or folders, and
jsonl/parquet files with a chosen text field.

An entry of ``eval_sets`` is one of:

- a ``.jsonl``/``.jsonl.zst``/``.parquet`` file, optionally ``FILE:FIELD`` (default field
  ``text_field``); its task name is the file name without suffix;
- a task YAML file, or a folder of them (each task named by its ``task:`` key);
- an lm-evaluation-harness task name.

Tasks (the last two) are read through lm-eval's own task API (``TaskManager``,
``get_task_dict``, ``Task.eval_docs``), offline, from local data files or the datasets
cache, so the items are the very documents ``make eval`` scores, in the same order:
item ``i`` of a task is ``eval_docs[i]``. An item's text is the task's
decontamination query where it defines one (``should_decontaminate``), else its
prompt followed by its target (the correct choice of a multiple-choice task).
lm-eval is imported inside ``_task_items`` only: it is the optional ``eval`` extra.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq
import yaml
import zstandard

FILE_SUFFIXES = (".jsonl", ".jsonl.zst", ".parquet")


@dataclass(frozen=True)
class EvalItem:
    task: str
    index: int  # position in the task's evaluation documents (what lm-eval's ``samples`` selects)
    text: str
    sha256: str  # of the document as JSON (sorted keys): the harness checks it is the same item


def doc_sha256(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")).hexdigest()


def describe(entries: list[str]) -> list[dict[str, Any]]:
    """What the items depend on, for the stage identity: files by size and mtime, task
    names as given. A path that does not exist is an error here, before any task runs."""
    out = []
    for entry in entries:
        path = _split_field(entry)[0]
        if not path.exists() and (path.suffix in (".yaml", ".yml") or path.name.endswith(FILE_SUFFIXES) or "/" in entry):
            raise FileNotFoundError(f"evaluation set {entry}: no such file or folder")
        files = sorted(path.rglob("*")) if path.is_dir() else [path] if path.exists() else []
        out.append({"entry": entry, "files": [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()]})
    return out


def load_items(entries: list[str], text_field: str) -> Iterator[EvalItem]:
    """Every item of every evaluation set, in entry order; a task named twice is read once."""
    seen: set[str] = set()
    tasks: list[str] = []
    include: list[str] = []
    for entry in entries:
        path, field = _split_field(entry)
        if path.name.endswith(FILE_SUFFIXES) and path.is_file():
            name = path.name
            for suffix in FILE_SUFFIXES:
                name = name.removesuffix(suffix)
            if name not in seen:
                seen.add(name)
                yield from _file_items(path, name, field or text_field)
        elif path.is_dir() or (path.suffix in (".yaml", ".yml") and path.is_file()):
            found = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
            if not found:
                raise FileNotFoundError(f"evaluation set {entry}: no task YAML files in the folder")
            include.append(str((path if path.is_dir() else path.parent).resolve()))
            tasks += [_yaml_task_name(p) for p in found]
        elif path.suffix in (".yaml", ".yml") or path.name.endswith(FILE_SUFFIXES) or "/" in entry:
            raise FileNotFoundError(f"evaluation set {entry}: no such file or folder")
        else:
            tasks.append(entry)
    tasks = [t for t in dict.fromkeys(tasks) if t not in seen]
    if tasks:
        yield from _task_items(tasks, include)


def _split_field(entry: str) -> tuple[Path, str | None]:
    head, sep, tail = entry.rpartition(":")
    if sep and head.endswith(FILE_SUFFIXES) and tail and "/" not in tail:
        return Path(head), tail
    return Path(entry), None


def _yaml_task_name(path: Path) -> str:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return str(data.get("task") or path.stem)


def _file_items(path: Path, task: str, field: str) -> Iterator[EvalItem]:
    for index, record in enumerate(_records(path)):
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise ValueError(f"evaluation set {path} record {index + 1}: field {field!r} is "
                             f"{type(value).__name__}, not a string")
        yield EvalItem(task, index, value, doc_sha256(record))


def _records(path: Path) -> Iterator[Any]:
    if path.name.endswith(".parquet"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
        return
    with open(path, "rb") as raw:
        stream = zstandard.ZstdDecompressor().stream_reader(raw) if path.name.endswith(".zst") else raw
        for line_no, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8"), 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"evaluation set {path} line {line_no}: not JSON ({exc})") from None


def _task_items(names: list[str], include: list[str]) -> Iterator[EvalItem]:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from lm_eval.tasks import TaskManager, get_task_dict
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"evaluation sets {names} are lm-eval tasks, but {exc.name} is not installed: "
                                  "pip install -e '.[eval]'") from None
    manager = TaskManager(include_path=include or None, include_defaults=any(n not in _names(include) for n in names))
    for name, task in _flatten(get_task_dict(names, manager)):
        for index, doc in enumerate(task.eval_docs):
            yield EvalItem(name, index, _item_text(task, doc), doc_sha256(doc))


def _names(include: list[str]) -> set[str]:
    return {_yaml_task_name(p) for folder in include for p in Path(folder).glob("*.y*ml")}


def _flatten(tasks: dict) -> Iterator[tuple[str, Any]]:
    """(name, Task) of a task dict whose groups map to nested dicts."""
    for key, value in tasks.items():
        if isinstance(value, dict):
            yield from _flatten(value)
        else:
            yield getattr(key, "group_name", None) or str(key), value


def _item_text(task: Any, doc: dict) -> str:
    if task.should_decontaminate():
        return str(task.doc_to_decontamination_query(doc))
    text, target = task.doc_to_text(doc), task.doc_to_target(doc)
    if isinstance(target, int) and task.config.doc_to_choice is not None:
        target = task.doc_to_choice(doc)[target]
    parts = [text if isinstance(text, str) else "", target if isinstance(target, str) else ""]
    return " ".join(p for p in parts if p)
