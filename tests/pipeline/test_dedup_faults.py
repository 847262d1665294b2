"""Faults during `python -m pipeline.dedup`: a worker killed in the middle of a task is
retried and the job finishes by itself with the same bytes; a task that keeps failing
stops the job naming the step, the task, its input file and the error.

The job runs in a subprocess with its own local Ray; tests/fault_hook/sitecustomize.py
(on PYTHONPATH, inherited by Ray's workers) slows the chosen step's function down so
the test can find its worker by task name (``ray::dedup.<step>``) and kill it by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.pipeline.test_dedup import _config, _outputs, corpus  # noqa: F401  (corpus is a fixture)

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "tests" / "fault_hook"
ARGS = ["run.progress=false", "run.partitions=2", "run.num_cpus=2", "run.retries=2"]
pytestmark = pytest.mark.slow


def _start(root: Path, out: Path, fault: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=f"{HOOK}{os.pathsep}{REPO}", PIPELINE_FAULT=fault)
    cmd = [sys.executable, "-m", "pipeline.dedup", f"input={root}", f"output={out}", *ARGS]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _worker_running(job: subprocess.Popen, task_name: str, timeout: float = 120) -> psutil.Process:
    """The Ray worker of ``job`` that is executing a task named ``task_name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, "the job ended before its worker could be killed"
        for process in psutil.process_iter(["cmdline"]):
            try:
                title = " ".join(process.info["cmdline"] or [])
                if title.strip() == f"ray::{task_name}" and job.pid in {p.pid for p in process.parents()}:
                    return process
            except psutil.Error:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no worker ran {task_name} within {timeout} s")


def _end_session(job: subprocess.Popen) -> None:
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == job.pid:
                process.kill()
        except (OSError, psutil.Error):
            continue


@pytest.fixture(scope="module")
def reference(ray_session, corpus, tmp_path_factory):  # noqa: F811
    """Outputs of an uninterrupted run, and the folder every faulty run writes to (the
    manifest names its output folder, so all runs share one)."""
    from pipeline import dedup

    root, _ = corpus
    out = tmp_path_factory.mktemp("faults") / "out"
    dedup.run(_config(root, out))  # outputs do not depend on partitions or CPUs
    return out, _outputs(out)


@pytest.mark.parametrize("step,function", [
    ("prepare", "pipeline.dedup.prepare:prepare_file"),
    ("verify", "pipeline.dedup.verify:verify_partition"),
    ("write", "pipeline.dedup.write:write_file"),
])
def test_killed_worker_is_retried_and_outputs_are_identical(reference, corpus, step, function):  # noqa: F811
    out, expected = reference
    shutil.rmtree(out, ignore_errors=True)
    job = _start(corpus[0], out, f"{function}:slow=2")
    try:
        victim = _worker_running(job, f"dedup.{step}")
        victim.send_signal(signal.SIGKILL)
        _, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr[-3000:]
    finally:
        _end_session(job)
    assert _outputs(out) == expected
    assert not victim.is_running()


def test_a_task_that_keeps_failing_stops_the_job_and_names_it(corpus, tmp_path):  # noqa: F811
    root, _ = corpus
    job = _start(root, tmp_path / "failing", "pipeline.dedup.prepare:prepare_file:fail")
    try:
        _, stderr = job.communicate(timeout=300)
    finally:
        _end_session(job)
    assert job.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("python -m pipeline.dedup: error:")]
    assert len(errors) == 1, stderr[-3000:]
    message = errors[0]
    assert message.startswith("python -m pipeline.dedup: error: dedup step 'prepare': task f00000")
    assert "alpha/a.jsonl.zst" in message or "beta/b.jsonl.zst" in message
    assert "retried up to 2 times" in message and "OSError: injected I/O error in prepare_file" in message
    assert not (tmp_path / "failing" / "manifest.json").exists()
