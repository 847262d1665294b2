"""The stage kernel every pipeline stage runs on.

A stage (``make corpus``, ``make dedup``, ``make tokenize``) is a list of small steps.
Each step is a set of idempotent tasks that write only inside the step's folder of the
stage's work folder; the kernel runs them as Ray tasks (bounded in flight, retried when
a worker or node dies, resumed after a crash), and the stage publishes its final
outputs by renaming them into place and writes ``manifest.json`` last.

- ``Stage`` (stage.py): the output folder, the work folder and its markers, publishing,
  the manifest.
- ``TaskRunner`` / ``Task`` (runner.py): one step's tasks on Ray, with a progress bar,
  CPU timing, resume and retries.
- ``RunConfig`` (run_config.py): the ``run`` section every stage shares.
- ``init_ray`` (ray_runtime.py): an embedded local Ray, or the cluster at RAY_ADDRESS.
"""

from pipeline.kernel.ray_runtime import init_ray
from pipeline.kernel.run_config import RunConfig
from pipeline.kernel.runner import Task, TaskFailed, TaskRunner
from pipeline.kernel.stage import Stage, digest, file_fingerprint, file_key

__all__ = ["RunConfig", "Stage", "Task", "TaskFailed", "TaskRunner", "digest", "file_fingerprint", "file_key", "init_ray"]
