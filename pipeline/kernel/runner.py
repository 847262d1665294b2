"""Run one step of a stage as Ray tasks: resume, retries, a bound in flight, progress.

A step is ``fn(*task.args)`` for each of its tasks. Tasks must be idempotent: they
write only inside the step's folder, each file whole (common.storage: a renamed
temporary file on a local disk, one complete upload on an object store), and return
a small JSON-able result. The runner records each finished task -- after the task has
returned, so after all its files are complete -- as
``<step>/<key>.done.json`` (its result and input fingerprint) and the finished step as
``<step>/DONE``, so after a crash a re-run submits only what is missing (records are
stored a few at a time in the background, all before the step's ``DONE``):

- a step's records are valid while the step's settings and everything upstream (the
  steps run before it, which the step identity chains) are unchanged; otherwise the
  step folder is cleared and the step runs again;
- a task whose fingerprint (e.g. its input file's size and mtime) changed runs again.

Retrying is therefore always safe. Ray retries a task whose worker or node died
(``max_retries``) and one that raised an ``OSError`` (transient I/O); a task that keeps
failing stops the job with the step, the task, its input and the last error named.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import ray
from tqdm import tqdm

from common.storage import location, write_json
from pipeline.kernel.ray_runtime import init_ray
from pipeline.kernel.run_config import RunConfig
from pipeline.kernel.stage import Stage, digest, remove_path, sweep_temporaries

STEP_MARKER = "step.json"
DONE = "DONE"
RECORD_SUFFIX = ".done.json"
# Records stored at a time: on an object store each is a request of tens of milliseconds,
# which the driver would otherwise wait for between one finished task and the next.
RECORD_WRITERS = 8


@dataclass
class Task:
    key: str  # unique within its step and usable as a file name: "f000003", "p0007"
    args: tuple
    label: str = ""  # what a failure names, e.g. the input file
    fingerprint: Any = None  # JSON-able facts the result depends on beyond the step's settings


class TaskFailed(RuntimeError):
    """A task still failed after its retries; the message names step, task, input and error."""


def _timed(fn: Callable, *args: Any) -> tuple[Any, float]:
    """``fn(*args)`` and the CPU seconds it took in its worker."""
    start = time.process_time()
    result = fn(*args)
    return result, time.process_time() - start


def _plain(value: Any) -> Any:
    """The JSON form of a result, so fresh and resumed results look the same."""
    return json.loads(json.dumps(value))


class TaskRunner:
    def __init__(self, stage: Stage, num_cpus: int | None = None, progress: bool = True, retries: int = 3,
                 max_in_flight: int | None = None):
        init_ray(num_cpus)
        self.stage = stage
        self.progress = progress
        self.retries = retries
        self.max_in_flight = max_in_flight
        self.upstream = ""  # identity of the step run last: every later step depends on it
        self.timings: dict[str, tuple[float, float]] = {}  # step -> (wall, CPU seconds) of steps that ran
        self.reused: dict[str, int] = {}  # step -> tasks whose earlier result was reused

    @classmethod
    def from_config(cls, stage: Stage, run: RunConfig) -> "TaskRunner":
        return cls(stage, run.num_cpus, run.progress, run.retries)

    @staticmethod
    def share(value: Any) -> Any:
        """Put a large read-only argument into Ray's object store once for all tasks."""
        return ray.put(value)

    def run(self, step: str, fn: Callable, tasks: list[Task], settings: Any, num_cpus: float = 1) -> list[Any]:
        """Run (or resume) a step; the tasks' results in task order."""
        folder = self.stage.step_dir(step)
        base = digest({"step": step, "settings": settings, "upstream": self.upstream})
        present = {f.name for f in location(folder).list_files(recursive=False)}  # one listing, not a probe per task
        if _read(folder / STEP_MARKER, present).get("base") != base:
            _clear(folder)
            present = set()
            write_json(folder / STEP_MARKER, {"step": step, "base": base})
        identity = digest({"base": base, "tasks": [(t.key, digest(t.fingerprint)) for t in tasks]})
        results: list[Any] = [None] * len(tasks)
        todo = []
        for i, task in enumerate(tasks):
            record = _read(folder / f"{task.key}{RECORD_SUFFIX}", present)
            if record.get("fingerprint") == digest(task.fingerprint) and "result" in record:
                results[i] = record["result"]
            else:
                todo.append(i)
        self.reused[step] = len(tasks) - len(todo)
        if todo or _read(folder / DONE, present).get("identity") != identity:
            start = time.time()
            cpu = self._submit(step, fn, tasks, todo, results, folder, num_cpus)
            sweep_temporaries(folder)  # what killed attempts left behind
            write_json(folder / DONE, {"step": step, "identity": identity})
            self.timings[step] = (time.time() - start, cpu)
        self.upstream = identity
        return results

    def _submit(self, step: str, fn: Callable, tasks: list[Task], todo: list[int], results: list[Any],
                folder, num_cpus: float) -> float:
        remote = ray.remote(_timed).options(
            num_cpus=num_cpus, max_retries=self.retries, retry_exceptions=[OSError], name=f"{self.stage.name}.{step}"
        )
        limit = self.max_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1))) * 2
        queue, pending, cpu, stored = deque(todo), {}, 0.0, []
        bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc=f"{self.stage.name} {step}", unit="task",
                   disable=not self.progress, file=sys.stderr)
        writers = ThreadPoolExecutor(RECORD_WRITERS)
        try:
            while queue or pending:
                while queue and len(pending) < limit:
                    i = queue.popleft()
                    pending[remote.remote(fn, *tasks[i].args)] = i
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    i = pending.pop(ref)
                    try:
                        result, seconds = ray.get(ref)
                    except Exception as exc:
                        for other in pending:
                            ray.cancel(other, force=True)
                        raise self._failure(step, tasks[i], exc) from exc
                    results[i] = _plain(result)
                    cpu += seconds
                    stored.append(writers.submit(write_json, folder / f"{tasks[i].key}{RECORD_SUFFIX}",
                                                 {"fingerprint": digest(tasks[i].fingerprint), "result": results[i]}))
                    bar.update(1)
        finally:
            writers.shutdown()  # waits for the records already handed over
            bar.close()
        for record in stored:
            record.result()  # a record that could not be stored fails the step before it is marked done
        return cpu

    def _failure(self, step: str, task: Task, exc: Exception) -> TaskFailed:
        cause = getattr(exc, "cause", None) or exc
        what = f" ({task.label})" if task.label else ""
        message = str(cause).strip().splitlines()[-1] if str(cause).strip() else ""
        return TaskFailed(
            f"{self.stage.name} step {step!r}: task {task.key}{what} failed (retried up to {self.retries} times "
            f"after a lost worker or node or an I/O error): {type(cause).__name__}: {message}"
        )


def _read(path, present: set[str]) -> dict[str, Any]:
    """A record or marker as a dict; {} when absent (``present``: the names the step folder holds)."""
    loc = location(path)
    if loc.name not in present:
        return {}
    try:
        data = json.loads(loc.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _clear(folder) -> None:
    loc = location(folder)
    if loc.is_local:
        for child in loc.local_path.iterdir():
            remove_path(child)
    else:
        loc.remove_tree()
