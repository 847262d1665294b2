"""The stage kernel: what a step reuses after a crash or a change, publishing, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.atomic import write_text
from pipeline.kernel import Stage, Task, TaskFailed, TaskRunner
from tests.helpers.interrupt import interrupted_after


def square(folder: str, x: int) -> dict:
    """A task: writes its file inside the step folder, returns a small result."""
    write_text(Path(folder) / f"{x}.txt", str(x * x))
    (Path(folder) / "calls").mkdir(exist_ok=True)
    (Path(folder) / "calls" / f"{x}-{len(list((Path(folder) / 'calls').iterdir()))}").touch()
    return {"square": x * x}


def broken(x: int) -> dict:
    raise ValueError(f"bad value {x}")


def _calls(folder: Path) -> int:
    return len(list((folder / "calls").iterdir())) if (folder / "calls").exists() else 0


def _run(stage: Stage, settings, values, fingerprints=None, extra_step=False):
    runner = TaskRunner(stage, progress=False, retries=0)
    folder = stage.step_dir("square")
    tasks = [Task(f"x{v}", (str(folder), v), f"value {v}", (fingerprints or {}).get(v)) for v in values]
    results = runner.run("square", square, tasks, settings)
    if extra_step:
        later = stage.step_dir("later")
        results += runner.run("later", square, [Task("x9", (str(later), 9))], settings)
    return results, runner


def test_results_come_in_task_order_and_resume_reuses_finished_tasks(ray_session, tmp_path):
    stage = Stage("demo", tmp_path / "out", {"a": 1}, inputs=[], outputs=[])
    stage.begin()
    results, runner = _run(stage, {"a": 1}, [3, 1, 2])
    assert results == [{"square": 9}, {"square": 1}, {"square": 4}] and runner.reused["square"] == 0
    folder = stage.work / "square"
    assert _calls(folder) == 3
    # a crash after two tasks: one record and DONE gone, a half-written temporary left
    (folder / "DONE").unlink()
    (folder / "x1.done.json").unlink()
    (folder / "2.txt.999.tmp").write_text("partial")
    results, runner = _run(stage, {"a": 1}, [3, 1, 2])
    assert results == [{"square": 9}, {"square": 1}, {"square": 4}]
    assert runner.reused["square"] == 2 and _calls(folder) == 4  # only the missing task ran
    assert not list(folder.glob("*.tmp"))


def test_a_record_that_cannot_be_stored_fails_the_step_before_it_is_done(ray_session, tmp_path, monkeypatch):
    """Records are stored in the background; one that fails still fails the step, unmarked."""
    from pipeline.kernel import runner as runner_module

    stage = Stage("demo", tmp_path / "out", {}, inputs=[], outputs=[])
    stage.begin()
    store = runner_module.write_json

    def refusing(path, data, **kwargs):
        if str(path).endswith("x2.done.json"):
            raise PermissionError(f"{path}: the store refused the record")
        return store(path, data, **kwargs)

    monkeypatch.setattr(runner_module, "write_json", refusing)
    with pytest.raises(PermissionError, match="refused the record"):
        _run(stage, {}, [1, 2, 3])
    folder = stage.work / "square"
    assert not (folder / "DONE").exists() and not (folder / "x2.done.json").exists()
    assert (folder / "x1.done.json").exists() and (folder / "x3.done.json").exists()


def test_changed_settings_clear_the_step_and_later_steps_follow(ray_session, tmp_path):
    stage = Stage("demo", tmp_path / "out", {}, inputs=[], outputs=[])
    stage.begin()
    _run(stage, {"a": 1}, [1, 2], extra_step=True)
    _, runner = _run(stage, {"a": 1}, [1, 2], extra_step=True)
    assert runner.reused == {"square": 2, "later": 1} and not runner.timings  # nothing ran again
    _, runner = _run(stage, {"a": 2}, [1, 2], extra_step=True)
    assert runner.reused == {"square": 0, "later": 0}  # the step's settings and everything after it
    assert _calls(stage.work / "square") == 2  # the folder was cleared, then both ran


def test_a_changed_fingerprint_reruns_only_its_task(ray_session, tmp_path):
    stage = Stage("demo", tmp_path / "out", {}, inputs=[], outputs=[])
    stage.begin()
    _run(stage, {}, [1, 2, 3], fingerprints={1: "a", 2: "b", 3: "c"}, extra_step=True)
    _, runner = _run(stage, {}, [1, 2, 3], fingerprints={1: "a", 2: "B", 3: "c"}, extra_step=True)
    assert runner.reused == {"square": 2, "later": 0}  # the input of one task changed: it and what follows


def test_an_interrupted_stage_resumes_after_its_last_step_and_failures_name_the_task(ray_session, tmp_path):
    stage = Stage("demo", tmp_path / "out", {}, inputs=[], outputs=[])
    stage.begin()
    with interrupted_after("square"):
        _run(stage, {}, [1], extra_step=True)
    assert not (stage.work / "later").exists()
    _, runner = _run(stage, {}, [1], extra_step=True)
    assert runner.reused == {"square": 1, "later": 0}  # the finished step is not run again
    runner = TaskRunner(stage, progress=False, retries=1)
    with pytest.raises(TaskFailed, match=r"demo step 'bad': task t7 \(input seven\) failed .*ValueError: bad value 7"):
        runner.run("bad", broken, [Task("t7", (7,), "input seven")], {})


def test_stage_completion_start_over_and_publishing(tmp_path):
    out = tmp_path / "out"
    stage = Stage("demo", out, {"k": 1}, inputs=[{"file": "a", "size": 3}], outputs=["result", "part-*"])
    assert not stage.is_complete()
    stage.begin()
    made = stage.step_dir("make") / "result"
    made.mkdir()
    (made / "data.txt").write_text("x")
    (made / "data.txt.55.tmp").write_text("partial")
    stage.publish(made, "result")
    stage.publish(made, "result")  # again (a resumed run): nothing left to move, nothing lost
    assert [p.name for p in (out / "result").iterdir()] == ["data.txt"]
    (out / "part-1").write_text("old")
    stage.finish({"stage": "demo"}, keep_work=True)
    assert stage.is_complete() and json.loads((out / "manifest.json").read_text()) == {"stage": "demo"}
    other = Stage("demo", out, {"k": 2}, inputs=[{"file": "a", "size": 3}], outputs=["result", "part-*"])
    assert not other.is_complete()  # another config: start over
    other.begin()
    assert not (out / "manifest.json").exists() and not (out / "result").exists() and not (out / "part-1").exists()
    other.finish({"stage": "demo"}, keep_work=False)
    assert not (out / "_work").exists() and (out / "manifest.json").exists()


def test_where_the_work_folder_goes(tmp_path, monkeypatch):
    """run.work_dir: auto keeps an object-store output's work folder on this machine's disk
    only when every task runs here; ``output`` and a named folder are taken as given."""
    import ray

    from common.storage import cache_root, location
    from pipeline.kernel import ray_runtime
    from pipeline.kernel import stage as stage_module
    from pipeline.kernel.stage import work_location

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local, remote, other = location(tmp_path / "out"), location("s3://bucket/out"), location("s3://bucket/other")
    assert work_location("dedup", local) == local / "_work"
    assert work_location("dedup", remote, "output") == remote / "_work"
    mine = work_location("dedup", remote)
    assert mine.is_local and Path(mine.path).parent == cache_root() / "stage-work" and mine != work_location("dedup", other)
    assert work_location("tokenize", remote) != mine  # one folder per stage and output
    named = work_location("dedup", remote, str(tmp_path / "scratch"))
    assert named.parent == location(tmp_path / "scratch") and named.name.startswith("dedup-")

    monkeypatch.setattr(stage_module, "on_this_machine_only", lambda: False)  # a joined cluster
    assert work_location("dedup", remote) == remote / "_work"
    assert work_location("dedup", local) == local / "_work"

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert not ray_runtime.on_this_machine_only()  # the job will join that cluster
    monkeypatch.delenv("RAY_ADDRESS")
    assert ray_runtime.on_this_machine_only()  # init_ray will start an embedded Ray
