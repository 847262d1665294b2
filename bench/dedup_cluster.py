"""Dedup and tokenize on a two-node Ray cluster with no shared disk (head + second node on
loopback, each with its own temporary folder), input and output on the S3 test server, also
when the second node dies in the middle of a job; against a local single-node run.

    .venv/bin/python bench/dedup_cluster.py [--corpus data/sample] [--out /tmp/dedup_cluster] [--storage s3|local]

For each stage (dedup, then tokenize on dedup's corpus) it runs ``python -m pipeline.<stage>``
three ways and compares every published file byte for byte (the manifest apart from the
locations it names and its timings):

1. on one machine's disk with its own embedded Ray (the reference);
2. on the two-node cluster (``RAY_ADDRESS``), input and output on the S3 server;
3. the same, killing the second node's raylet (SIGKILL) once the job's first step
   (dedup: prepare, tokenize: encode) has recorded a task: its tasks are retried on the head.

``--storage local`` runs the cluster on a local output folder instead (one machine's
disk standing in for shared storage). The S3 server is moto's on 127.0.0.1 (the dev
extra); nodes are started with ``ray start`` and stopped by their process ids.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.ray_cluster import LoopbackCluster  # noqa: E402  (the bench runs from a checkout)
from tests.helpers.s3 import start_s3_server  # noqa: E402

STAGES = {"dedup": ("pipeline.dedup", "prepare", ("input", "config.input", "config.output")),
          "tokenize": ("pipeline.tokenize", "encode", ("config.input", "config.output", "config.run", "timing",
                                                       "input_files_reused"))}


def published(out: str) -> dict[str, bytes]:
    from common.storage import location

    root = location(out)
    return {f.relative_to(root): f.read_bytes() for f in root.list_files() if not f.relative_to(root).startswith("_work/")}


def comparable(manifest: bytes, keys) -> dict:
    data = json.loads(manifest)
    for key in keys:
        node, (*parents, last) = data, key.split(".")
        for part in parents:
            node = node[part]
        node.pop(last)
    return data


def run(stage: str, corpus: str, out: str, env: dict, kill=None) -> float:
    """One run into ``out``; ``kill`` is called once the first step has recorded a task."""
    from common.storage import location

    module, first_step, _ = STAGES[stage]
    location(out).remove_tree()
    start = time.time()
    job = subprocess.Popen([sys.executable, "-m", module, f"input={corpus}", f"output={out}", "run.progress=false"],
                           cwd=REPO, env=env)
    records = location(out) / "_work" / first_step
    while kill is not None and job.poll() is None:
        if records.list_files(recursive=False, suffixes=[".done.json"]):
            kill()
            break
        time.sleep(0.1)
    if job.wait() != 0:
        raise SystemExit(f"{stage} failed with exit code {job.returncode}")
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="data/sample")
    parser.add_argument("--out", default="/tmp/dedup_cluster")
    parser.add_argument("--storage", choices=("s3", "local"), default="s3")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    server = None
    if args.storage == "s3":  # before any node starts: the nodes' workers inherit the endpoint
        server, s3 = start_s3_server()
        from common.storage import location

        shared = s3.create_bucket("cluster")
        corpus = Path(args.corpus)
        for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
            (location(shared) / "corpus" / path.relative_to(corpus).as_posix()).upload_from(path)
        cluster_corpus = f"{shared}/corpus"
    else:
        shared, cluster_corpus = str(out / "cluster"), args.corpus
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    local_env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    times: dict[str, dict[str, float]] = {}
    ok = True
    inputs = {"dedup": (args.corpus, cluster_corpus)}
    for stage in STAGES:
        local_in, cluster_in = inputs[stage]
        t_local = run(stage, local_in, str(out / f"local-{stage}"), local_env)
        reference = published(str(out / f"local-{stage}"))
        with LoopbackCluster(env) as cluster:
            cluster.add_node()
            job_env = {**cluster.env, "RAY_ADDRESS": cluster.address}
            t_cluster = run(stage, cluster_in, f"{shared}/{stage}", job_env)
            got = published(f"{shared}/{stage}")
            killed: list[int] = []
            t_loss = run(stage, cluster_in, f"{shared}/{stage}-loss", job_env,
                         kill=lambda: killed.append(cluster.kill_raylet(cluster.nodes[-1])))
            lost = published(f"{shared}/{stage}-loss")
        keys = STAGES[stage][2]
        for name, outputs in (("two nodes", got), ("node loss", lost)):
            same = sorted(outputs) == sorted(reference) and all(
                outputs[k] == v for k, v in reference.items() if k != "manifest.json"
            ) and comparable(outputs["manifest.json"], keys) == comparable(reference["manifest.json"], keys)
            ok = ok and same and bool(killed)
            print(f"{stage}: {name} identical to the local run: {same} ({len(reference)} files)")
        times[stage] = {"local": t_local, "cluster": t_cluster, "node_loss": t_loss}
        print(f"{stage}: local single-node {t_local:.1f} s, two nodes ({args.storage}) {t_cluster:.1f} s, "
              f"second node's raylet killed mid-{STAGES[stage][1]} {t_loss:.1f} s (raylet pid {killed})")
        inputs["tokenize"] = (str(out / "local-dedup" / "corpus"), f"{shared}/dedup/corpus")
    if server is not None:
        server.stop()
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
