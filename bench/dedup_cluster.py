"""The same dedup job on a Ray cluster (head + second node on loopback) via RAY_ADDRESS.

    .venv/bin/python bench/dedup_cluster.py [--corpus data/sample] [--out /tmp/dedup_cluster]

Starts ``ray start --head --block`` and a second ``ray start --address ... --block``
node (1 CPU each, on 127.0.0.1, separate temp folders), runs
``python -m pipeline.dedup`` with ``RAY_ADDRESS`` pointing at the head, runs the same
config on the embedded local Ray, and compares every output file byte for byte. The
two node processes are stopped by their process ids (never ``ray stop``, which would
stop every Ray instance on the machine). The work folder must be visible to every
node (here: one machine; on a real cluster, shared storage).
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

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def outputs(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and "_work" not in p.relative_to(out).parts
    }


def run(corpus: str, out: Path, env: dict) -> tuple[float, dict[str, bytes]]:
    """One run into ``out`` (the same path for both runs: the manifest records it)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    subprocess.run(
        [sys.executable, "-m", "pipeline.dedup", f"input={corpus}", f"output={out}", "run.progress=false", "run.num_cpus=2"],
        cwd=REPO, env=env, check=True,
    )
    return time.time() - start, outputs(out)


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
    address = f"127.0.0.1:{args.port}"
    nodes = []
    try:
        nodes.append(subprocess.Popen(
            [RAY, "start", "--head", "--block", f"--port={args.port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
             "--include-dashboard=false", f"--temp-dir={out / 'ray-head'}"],
            env=base_env, start_new_session=True,
        ))
        time.sleep(8)
        nodes.append(subprocess.Popen(
            [RAY, "start", "--block", f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1"],
            env=base_env, start_new_session=True,
        ))
        time.sleep(8)
        cluster_env = {**base_env, "RAY_ADDRESS": address}
        t_cluster, a = run(args.corpus, out / "run", cluster_env)
    finally:
        for proc in reversed(nodes):
            proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
        for proc in nodes:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    t_local, b = run(args.corpus, out / "run", base_env)
    same = a == b
    print(f"cluster run {t_cluster:.1f} s, local run {t_local:.1f} s, {len(a)} output files, identical: {same}")
    if not same:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        print("differing files:", diff[:20])
        sys.exit(1)


if __name__ == "__main__":
    main()
