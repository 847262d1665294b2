"""Training with its shards and run_dir on an S3 server (moto on 127.0.0.1): a run killed
mid-way resumes from the newest complete checkpoint on the store, on a node with nothing
local, to the losses and byte-identical weights of an uninterrupted local run; checkpoints
written to and trained from a GCS server (fake-gcs-server on 127.0.0.1) too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from common.config import load_config, to_dict
from common.storage import location
from tests.helpers.s3 import s3_bucket, s3_server  # noqa: F401  (fixtures)
from tests.helpers.train_support import REPO, tiny_config, write_token_dir
from train.checkpoint import STATE_NAME, complete_checkpoints, stored_checkpoints
from train.distributed import init_distributed
from train.metrics import read_metrics
from train.trainer import Trainer

STEPS = 12


def upload_folder(local: Path, remote: str) -> None:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        (location(remote) / path.relative_to(local).as_posix()).upload_from(path)


def train_losses(lines: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in lines if r["kind"] == "train"}


def stored_metrics(run: str) -> list[dict]:
    text = (location(run) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_yaml(config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(to_dict(config)), encoding="utf-8")
    return path


@pytest.mark.slow
def test_killed_run_on_s3_resumes_to_the_local_runs_weights(tmp_path, s3_bucket):  # noqa: F811
    tokens = write_token_dir(tmp_path / "tokens")
    upload_folder(tokens, f"{s3_bucket}/tokens")
    straight = tiny_config(tmp_path / "local", tokens, checkpoint_every=2)
    Trainer(straight, straight.run_dir, init_distributed()).fit()

    run = f"{s3_bucket}/runs/tiny"
    config = tiny_config(tmp_path / "s3", tokens, checkpoint_every=2, run_dir=run,
                         data={"root": f"{s3_bucket}/tokens"}, cache_dir=str(tmp_path / "node-a"))
    path = write_yaml(config, tmp_path / "s3.yaml")
    cmd = [sys.executable, "-m", "train.pretrain", "--config", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    slowed = {**env, "PYTHONPATH": f"{REPO / 'tests' / 'fault_hook'}{os.pathsep}{REPO}",
              "PIPELINE_FAULT": "train.step:optimizer_step:slow=0.25"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=slowed, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = location(run) / "checkpoints"
    while not stored_checkpoints(checkpoints) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()  # still training when killed
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = stored_checkpoints(checkpoints)[-1]
    assert int(killed_at.name.removeprefix("step-")) < STEPS
    # a complete checkpoint on the store has every file; the run's files are only on the store
    names = {f.name for f in killed_at.list_files()}
    assert {"model.safetensors", "optimizer.safetensors", "rng-rank0.safetensors", STATE_NAME} <= names
    assert not (REPO / "s3:").exists()  # no URL taken for a local path

    # resumed on "another node": a fresh cache folder, nothing local but the config
    again = write_yaml(load_config(type(config), path, [f"cache_dir={tmp_path / 'node-b'}"]), tmp_path / "b.yaml")
    done = subprocess.run([sys.executable, "-m", "train.pretrain", "--config", str(again)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {killed_at}" in done.stdout
    assert f"metrics:         {run}/metrics.jsonl" in done.stdout

    a = train_losses(read_metrics(Path(straight.run_dir) / "metrics.jsonl"))
    b = train_losses(stored_metrics(run))
    assert sorted(b) == sorted(a) == list(range(1, STEPS + 1))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
    local_final = complete_checkpoints(Path(straight.run_dir) / "checkpoints")[-1]
    stored = stored_checkpoints(checkpoints)
    assert [c.name for c in stored] == [c.name for c in complete_checkpoints(Path(straight.run_dir) / "checkpoints")]
    assert (stored[-1] / "model.safetensors").read_bytes() == (local_final / "model.safetensors").read_bytes()
    assert (stored[-1] / "optimizer.safetensors").read_bytes() == (local_final / "optimizer.safetensors").read_bytes()
    for name in ("plots/loss_curve.png", "eval/final.json", "eval/loss_by_position.json", "config.json"):
        assert (location(run) / name).info().size > 0, name


def test_init_from_and_eval_checkpoint_on_an_object_store(tmp_path, store_bucket):
    """``s3://`` and ``gs://``: checkpoints written there, found, evaluated and trained from."""
    from model import BTLMLMHeadModel
    from train.harness import HarnessConfig, resolve_checkpoint, resolve_out_dir

    tokens = write_token_dir(tmp_path / "tokens", seq_lens=(64,))
    first = tiny_config(tmp_path / "a", tokens, phases=[{"seq_len": 64, "fraction": 1.0}], total_tokens=1024 * 2,
                        run_dir=f"{store_bucket}/first", cache_dir=str(tmp_path / "cache"), eval={"every": 0})
    Trainer(first, first.run_dir, init_distributed()).fit()

    cfg = load_config(HarnessConfig, REPO / "configs" / "eval" / "harness.yaml",
                      [f"checkpoints={store_bucket}/first/checkpoints", f"cache_dir={tmp_path / 'eval-cache'}"])
    named, local = resolve_checkpoint(cfg)
    assert str(named) == f"{store_bucket}/first/checkpoints/step-00000002"
    assert str(resolve_out_dir(cfg, named)) == f"{store_bucket}/first/eval"
    model = BTLMLMHeadModel.from_pretrained(str(local))

    second = tiny_config(tmp_path / "b", tokens, phases=[{"seq_len": 64, "fraction": 1.0}], total_tokens=1024,
                         init_from=str(named), cache_dir=str(tmp_path / "cache-b"), eval={"every": 0})
    trainer = Trainer(second, second.run_dir, init_distributed())
    for name, tensor in model.state_dict().items():
        assert trainer.model.state_dict()[name].equal(tensor), name


def test_the_shard_cache_is_bounded_and_evicts_the_least_recently_used(tmp_path, s3_bucket):  # noqa: F811
    from train.data import ShardSet, expected_metadata
    from train.run_store import local_token_root

    tokens = write_token_dir(tmp_path / "tokens", seq_lens=(64,))
    for name in ("a", "b"):
        upload_folder(tokens, f"{s3_bucket}/{name}")
    size = sum(p.stat().st_size for p in (tokens / "seq64").rglob("*") if p.is_file())
    cache, splits = tmp_path / "cache", ["train", "validation"]
    room = 1.5 * size / 2**30  # one token folder fits, not two
    a = local_token_root(f"{s3_bucket}/a", [64], splits, cache, room)
    assert sorted(p.name for p in (a / "seq64" / "train").iterdir()) == sorted(
        p.name for p in (tokens / "seq64" / "train").iterdir())
    before = len(list(a.rglob("*.arrow")))
    b = local_token_root(f"{s3_bucket}/b", [64], splits, cache, room)
    assert len(list(a.rglob("*.arrow"))) < before  # some of a's shards evicted to make room for b, not all
    assert sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) <= room * 2**30
    assert len(ShardSet(b, 64, "train", expected_metadata(256, None))) > 0
    with pytest.raises(ValueError, match="cache_max_gb"):
        local_token_root(f"{s3_bucket}/a", [64], splits, cache, size / 2 / 2**30)


@pytest.mark.slow
def test_two_ranks_checkpoint_to_s3_and_resume_from_it(tmp_path, s3_bucket):  # noqa: F811
    """torchrun, 2 CPU processes (DDP): each rank sends its RNG files, rank 0 the rest; a
    run stopped half-way resumes from the store to the losses of one local process."""
    tokens = write_token_dir(tmp_path / "tokens")
    upload_folder(tokens, f"{s3_bucket}/tokens")
    settings = dict(total_tokens=1024 * 6, eval={"every": 3}, checkpoint_every=0, num_threads=1)
    single = tiny_config(tmp_path / "one", tokens, **settings)
    Trainer(single, single.run_dir, init_distributed()).fit()

    run = f"{s3_bucket}/runs/ddp"
    ddp = tiny_config(tmp_path / "two", tokens, run_dir=run, data={"root": f"{s3_bucket}/tokens"},
                      cache_dir=str(tmp_path / "cache"), **settings)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "train.pretrain", "--config", str(write_yaml(ddp, tmp_path / "ddp.yaml"))]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd + ["max_steps=3"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stored = stored_checkpoints(location(run) / "checkpoints")
    assert [c.name for c in stored] == ["step-00000003"]
    assert {"rng-rank0.safetensors", "rng-rank1.safetensors", "rng-rank1.json"} <= {f.name for f in stored[0].list_files()}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"resuming from {run}/checkpoints/step-00000003" in done.stdout

    one = train_losses(read_metrics(Path(single.run_dir) / "metrics.jsonl"))
    two = train_losses(stored_metrics(run))
    assert sorted(one) == sorted(two) == list(range(1, 7))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step
