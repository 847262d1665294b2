"""Two CPU processes under torchrun (gloo), each with half the micro-batches, match one
process that accumulates them all, with DDP and with FSDP (sharded parameters)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.train_support import REPO, tiny_config, write_token_dir
from tests.train.test_train_loop import final_weights, run, train_losses, write_yaml
from train.metrics import read_metrics


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_single_process_accumulation(tmp_path, parallel):
    tokens = write_token_dir(tmp_path / "tokens")
    settings = dict(total_tokens=1024 * 6, eval={"every": 3}, checkpoint_every=0, num_threads=1)
    single = tiny_config(tmp_path / "one", tokens, **settings)
    trainer = run(single)
    assert trainer.batches[0].accumulation == 4  # 1024 tokens = 16 rows of 64 = 4 micro-batches of 4 rows

    ddp = tiny_config(tmp_path / "two", tokens, parallel=parallel, **settings)
    path = write_yaml(ddp, tmp_path / "ddp.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "train.pretrain", "--config", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if parallel == "fsdp":  # stop half-way, then resume from the sharded run's checkpoint
        done = subprocess.run(cmd + ["max_steps=3"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if parallel == "fsdp":
        assert "resuming from" in done.stdout and "step-00000003" in done.stdout

    one, two = train_losses(Path(single.run_dir)), train_losses(Path(ddp.run_dir))
    assert sorted(one) == sorted(two) == list(range(1, 7))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step
    evals_one = [r["val_loss"] for r in read_metrics(Path(single.run_dir) / "metrics.jsonl") if r["kind"] == "eval"]
    evals_two = [r["val_loss"] for r in read_metrics(Path(ddp.run_dir) / "metrics.jsonl") if r["kind"] == "eval"]
    assert len(evals_one) == len(evals_two) == 2
    for a, b in zip(evals_one, evals_two):
        assert b == pytest.approx(a, rel=1e-5)
    wa, wb = final_weights(Path(single.run_dir)), final_weights(Path(ddp.run_dir))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-5)
