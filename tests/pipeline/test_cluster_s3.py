"""A Ray cluster with no shared disk: a head and a second node on loopback, each with its
own temporary folder, input and output on the S3 test server (moto on 127.0.0.1). Dedup
and tokenize give the objects of a local single-node run, and still do when the second
node's raylet is killed in the middle of a job (the job finishes by itself)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.config import load_config
from common.storage import location
from tests.helpers.ray_cluster import LoopbackCluster
from tests.pipeline.test_dedup_s3 import store_outputs, upload_tree, without_locations
from tests.pipeline.test_tokenize_data import write_corpus
from tests.pipeline.test_tokenize_s3 import comparable as tokenize_comparable

REPO = Path(__file__).resolve().parents[2]
DEDUP = ["-m", "pipeline.dedup", "--config", "configs/data/slimpajama.yaml", "run.partitions=4"]
TOKENIZE = ["-m", "pipeline.tokenize", "--config", "configs/data/tokenize.yaml", "pack.seq_lens=[128,512]",
            "shards.max_bytes=100000", "shards.rows_per_batch=64", "formats=[arrow,megatron]"]
# Every node reads each input file a little slowly, so a node is killed while it works.
SLOW_READS = "pipeline.corpus_io:iter_file:slow=0.25"
pytestmark = pytest.mark.slow


def local_run(args: list[str], corpus: Path, out: Path) -> dict[str, bytes]:
    """The reference: the same settings on one machine's disk and the session's single-node Ray."""
    from pipeline.dedup import DedupStageConfig
    from pipeline.dedup import run as dedup
    from pipeline.tokenize import TokenizeConfig
    from pipeline.tokenize import run as tokenize

    cls, run = (DedupStageConfig, dedup) if args[1] == "pipeline.dedup" else (TokenizeConfig, tokenize)
    run(load_config(cls, REPO / args[3], [*args[4:], f"input={corpus}", f"output={out}", "run.progress=false"]))
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "_work" not in p.relative_to(out).parts}


def cluster_run(cluster: LoopbackCluster, args: list[str], corpus: str, out: str, kill_after: str | None = None):
    """The command on the cluster; ``kill_after``: kill the last node's raylet once this step
    has recorded its first task on the store. Returns the published objects."""
    env = {**cluster.env, "RAY_ADDRESS": cluster.address, "PYTHONPATH": str(REPO)}
    job = subprocess.Popen([sys.executable, *args, f"input={corpus}", f"output={out}", "run.progress=false"],
                           cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after:
        records = location(out) / "_work" / kill_after
        while job.poll() is None and not records.list_files(recursive=False, suffixes=[".done.json"]):
            time.sleep(0.1)
        assert job.poll() is None, "the job ended before the node could be killed"
        cluster.kill_raylet(cluster.nodes[-1])
    _, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-3000:]
    return store_outputs(out)


def assert_same(remote: dict[str, bytes], local: dict[str, bytes], comparable) -> None:
    assert sorted(remote) == sorted(local) and len(local) > 3
    differ = [name for name in local if remote[name] != local[name]]
    assert differ == ["manifest.json"], differ  # only the manifest names the locations (and times)
    assert comparable(remote["manifest.json"]) == comparable(local["manifest.json"])


def test_two_nodes_without_a_shared_disk_give_the_local_objects(tmp_path, s3_bucket, ray_session):
    corpus = write_corpus(tmp_path / "corpus", max_files=12, chunk_bytes=40_000)
    s3_corpus = upload_tree(corpus, f"{s3_bucket}/corpus")
    dedup_local = local_run(DEDUP, corpus, tmp_path / "dedup")
    tokenize_local = local_run(TOKENIZE, corpus, tmp_path / "tokens")

    node_env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests' / 'fault_hook'}{os.pathsep}{REPO}",
                "PIPELINE_FAULT": SLOW_READS}
    with LoopbackCluster(node_env) as cluster:
        cluster.add_node()
        assert cluster.alive() == 2
        assert_same(cluster_run(cluster, DEDUP, s3_corpus, f"{s3_bucket}/dedup"), dedup_local, without_locations)
        assert_same(cluster_run(cluster, TOKENIZE, s3_corpus, f"{s3_bucket}/tokens"), tokenize_local,
                    tokenize_comparable)
        # the second node dies mid-step; its tasks are retried on the head
        lost = cluster_run(cluster, DEDUP, s3_corpus, f"{s3_bucket}/dedup-loss", kill_after="prepare")
        assert_same(lost, dedup_local, without_locations)
        cluster.add_node()
        lost = cluster_run(cluster, TOKENIZE, s3_corpus, f"{s3_bucket}/tokens-loss", kill_after="encode")
        assert_same(lost, tokenize_local, tokenize_comparable)
