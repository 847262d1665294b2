"""The same dedup job on a Ray cluster (head + second node on loopback) via RAY_ADDRESS,
also when the second node dies in the middle of the job.

    .venv/bin/python bench/dedup_cluster.py [--corpus data/sample] [--out /tmp/dedup_cluster]

Starts ``ray start --head --block`` and a second ``ray start --address ... --block``
node (1 CPU each, on 127.0.0.1, separate temp folders) and runs
``python -m pipeline.dedup`` with ``RAY_ADDRESS`` pointing at the head three ways:

1. on the two-node cluster;
2. on the two-node cluster, killing the second node's raylet (SIGKILL) once the
   prepare step is under way: the node's tasks are retried on the head node;
3. on the embedded local Ray;

and compares every output file byte for byte. Node processes are stopped by their
process ids (never ``ray stop``, which would stop every Ray instance on the machine).
The work folder must be visible to every node (here: one machine; on a real cluster,
shared storage).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def outputs(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and "_work" not in p.relative_to(out).parts
    }


def run(corpus: str, out: Path, env: dict, on_prepare=None) -> tuple[float, dict[str, bytes]]:
    """One run into ``out`` (the same path for every run: the manifest records it);
    ``on_prepare`` is called once the first prepare task has finished."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    job = subprocess.Popen(
        [sys.executable, "-m", "pipeline.dedup", f"input={corpus}", f"output={out}", "run.progress=false", "run.num_cpus=2"],
        cwd=REPO, env=env,
    )
    while on_prepare is not None and job.poll() is None:
        if list((out / "_work" / "prepare").glob("*.done.json")):
            on_prepare()
            break
        time.sleep(0.1)
    if job.wait() != 0:
        raise SystemExit(f"dedup failed with exit code {job.returncode}")
    return time.time() - start, outputs(out)


def start_nodes(out: Path, port: int, env: dict) -> list[subprocess.Popen]:
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
         "--include-dashboard=false", f"--temp-dir={out / 'ray-head'}"],
        env=env, start_new_session=True,
    )
    time.sleep(8)
    second = subprocess.Popen(
        [RAY, "start", "--block", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=1"],
        env=env, start_new_session=True,
    )
    time.sleep(8)
    return [head, second]


def stop_nodes(nodes: list[subprocess.Popen]) -> None:
    for proc in reversed(nodes):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
    for proc in nodes:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def kill_raylet(node: subprocess.Popen) -> int:
    """SIGKILL the raylet of a node started by ``ray start --block`` (its workers die with it)."""
    for child in psutil.Process(node.pid).children(recursive=True):
        if child.name() == "raylet":
            child.kill()
            return child.pid
    raise RuntimeError("the second node has no raylet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="data/sample")
    parser.add_argument("--out", default="/tmp/dedup_cluster")
    parser.add_argument("--port", type=int, default=26379)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    base_env["RAY_USAGE_STATS_ENABLED"] = "0"
    base_env["RAY_AUTH_MODE"] = "disabled"  # a loopback test cluster: no token to share between nodes
    base_env["PYTHONPATH"] = str(REPO)
    cluster_env = {**base_env, "RAY_ADDRESS": f"127.0.0.1:{args.port}"}
    nodes = start_nodes(out, args.port, base_env)
    try:
        t_cluster, a = run(args.corpus, out / "run", cluster_env)
    finally:
        stop_nodes(nodes)
    nodes = start_nodes(out, args.port, base_env)
    killed = []
    try:
        t_loss, c = run(args.corpus, out / "run", cluster_env, on_prepare=lambda: killed.append(kill_raylet(nodes[1])))
    finally:
        stop_nodes(nodes)
    t_local, b = run(args.corpus, out / "run", base_env)
    print(f"cluster run {t_cluster:.1f} s, cluster run with the second node's raylet killed mid-prepare "
          f"{t_loss:.1f} s (raylet pid {killed}), local run {t_local:.1f} s, {len(a)} output files")
    print(f"identical: cluster vs local {a == b}, node loss vs local {c == b}")
    if not (a == b and c == b and killed):
        diff = sorted(k for k in set(a) | set(b) | set(c) if not (a.get(k) == b.get(k) == c.get(k)))
        print("differing files:", diff[:20])
        sys.exit(1)


if __name__ == "__main__":
    main()
