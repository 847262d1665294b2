"""What the stage kernel itself costs per task on an object store with a round trip per
request: one step of many trivial tasks, its work folder on the S3 test server behind a
proxy that holds every request for ``--latency-ms``.

    .venv/bin/python bench/step_latency.py [--tasks 200] [--latency-ms 20] [--repeats 3]

The tasks do nothing, so the wall time is the runner's: the step's listing and markers
and one stored record per task. Run it on two checkouts to compare them. Only loopback
addresses are used.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.storage_speed import start_server  # noqa: E402  (the bench runs from a checkout)
from tests.helpers.s3_proxy import S3Proxy  # noqa: E402


def nothing(i: int) -> dict:
    return {"i": i}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    server, s3 = start_server()
    proxy = S3Proxy(s3.endpoint, latency_s=args.latency_ms / 1000).start()
    os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint  # before Ray starts: its workers inherit it

    from pipeline.kernel import Stage, Task, TaskRunner, init_ray

    init_ray(2)
    bucket = s3.create_bucket("step-latency")
    walls = []
    for i in range(args.repeats):
        stage = Stage("bench", f"{bucket}/out-{i}", {}, inputs=[], outputs=[], work_dir="output")
        stage.begin()
        runner = TaskRunner(stage, progress=False)
        start = time.perf_counter()
        runner.run("nothing", nothing, [Task(f"t{k:05d}", (k,)) for k in range(args.tasks)], {})
        walls.append(time.perf_counter() - start)
    proxy.stop()
    server.terminate()
    server.wait()
    median = statistics.median(walls)
    print(f"{args.tasks} trivial tasks, work folder on S3, each request held {args.latency_ms:g} ms: "
          f"median {median:.2f} s of {[round(w, 2) for w in walls]} ({median / args.tasks * 1000:.1f} ms a task)")


if __name__ == "__main__":
    main()
