"""What every dedup step is: a name, one task function, and the numbers it runs over.

A task is ``task(cfg, layout, number, *args)``. ``number`` is a file number (the
reference's index parts first, then the input files) or a hash partition; the task
reads what earlier steps wrote through ``layout``, writes only inside its own step
folder (each file atomically) and returns a small JSON-able result. ``Steps`` turns a
``Step`` into the kernel's tasks (keys, labels, input fingerprints) and runs it, and
counts the storage requests each step's tasks made through the layout helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Union

from common.storage import Location
from pipeline.corpus_io import SourceFile
from pipeline.dedup.config import DedupStageConfig, work_settings
from pipeline.dedup.layout import Layout, part_key, requests_made, reset_requests
from pipeline.kernel import Task, TaskRunner, file_key

# What a step runs over: one task per ...
PARTITIONS = "partitions"  # hash partition (cfg.run.partitions)
FILES = "files"  # file: the reference's index parts, then the input files
INPUTS = "inputs"  # input file
REFERENCE = "reference"  # index part of the reference (incremental dedup)
GROUPS = "groups"  # group of an exchange's merge (Step.groups of them)


class TaskFunction(Protocol):
    def __call__(self, cfg: DedupStageConfig, layout: Layout, number: int, /, *args: Any) -> dict: ...


@dataclass(frozen=True)
class Step:
    name: str  # the step's folder under the work folder, and its name in messages and timings
    task: TaskFunction
    over: str  # PARTITIONS, FILES, INPUTS or REFERENCE
    args: Union[tuple, Callable[[int], tuple]] = ()  # after (cfg, layout, number): shared, or per number
    reads_input: bool = False  # reads its input file itself: re-run when the file changes
    groups: int = 0  # over=GROUPS: how many


class Steps:
    """Runs one dedup job's steps, in the order called, on the kernel's runner."""

    def __init__(self, runner: TaskRunner, cfg: DedupStageConfig, layout: Layout, reference_parts: list[Location],
                 files: list[SourceFile], fingerprints: list[dict]):
        self.runner, self.cfg, self.layout = runner, cfg, layout
        self.reference_parts, self.files, self.fingerprints = reference_parts, files, fingerprints
        self.settings = work_settings(cfg)
        self.requests: dict[str, dict[str, int]] = {}  # step -> storage requests of its tasks, by kind

    def __call__(self, step: Step) -> list[dict]:
        """Run (or resume) ``step``; its tasks' results in number order."""
        tasks = [Task(t.key, (step.task, *t.args), t.label, t.fingerprint) for t in self.tasks(step)]
        counted = self.runner.run(step.name, _counted, tasks, self.settings)
        totals: dict[str, int] = {}
        for record in counted:
            for kind, n in record["requests"].items():
                totals[kind] = totals.get(kind, 0) + n
        self.requests[step.name] = totals
        return [record["result"] for record in counted]

    def numbers(self, over: str) -> range:
        R, F = len(self.reference_parts), len(self.files)
        return {PARTITIONS: range(self.cfg.run.partitions), FILES: range(R + F), INPUTS: range(R, R + F),
                REFERENCE: range(R)}[over]

    def source(self, f: int) -> SourceFile:
        """The input file numbered ``f``."""
        return self.files[f - len(self.reference_parts)]

    def tasks(self, step: Step) -> list[Task]:
        per_number = step.args if callable(step.args) else lambda _: step.args
        if step.over == PARTITIONS:
            return [Task(part_key(p), (self.cfg, self.layout, p, *per_number(p))) for p in self.numbers(PARTITIONS)]
        if step.over == GROUPS:
            return [Task(f"g{g:05d}", (self.cfg, self.layout, g, *per_number(g))) for g in range(step.groups)]
        R = len(self.reference_parts)
        return [Task(file_key(f), (self.cfg, self.layout, f, *per_number(f)),
                     str(self.reference_parts[f]) if f < R else self.source(f).label,
                     self.fingerprints[f - R] if step.reads_input else None)
                for f in self.numbers(step.over)]


def _counted(task: TaskFunction, *args: Any) -> dict:
    """``task(*args)`` and the storage requests it made (counted in its worker)."""
    reset_requests()
    result = task(*args)
    return {"result": result, "requests": requests_made()}
