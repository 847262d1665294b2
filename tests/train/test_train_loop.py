"""The training loop: exact resume, checkpoints without pickle, non-finite steps, init_from."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from common.config import to_dict
from tests.helpers.train_support import REPO, tiny_config, write_token_dir
from train.checkpoint import complete_checkpoints
from train.distributed import init_distributed
from train.metrics import read_metrics
from train.trainer import NonFiniteError, Trainer


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return write_token_dir(tmp_path_factory.mktemp("tokens"))


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"}


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(complete_checkpoints(run_dir / "checkpoints")[-1] / "model.safetensors"))


def run(config) -> Trainer:
    trainer = Trainer(config, config.run_dir, init_distributed())
    trainer.fit()
    return trainer


def test_resume_matches_an_uninterrupted_run(tmp_path, tokens):
    straight = tiny_config(tmp_path / "a", tokens)
    run(straight)
    first_half = tiny_config(tmp_path / "b", tokens, max_steps=6)
    run(first_half)
    assert len(train_losses(Path(first_half.run_dir))) == 6
    resumed = run(tiny_config(tmp_path / "b", tokens))  # resume=auto picks up step 6
    assert resumed.resumed_from.name == "step-00000006"

    a, b = train_losses(Path(straight.run_dir)), train_losses(Path(first_half.run_dir))
    assert sorted(a) == sorted(b) == list(range(1, 13))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
    wa, wb = final_weights(Path(straight.run_dir)), final_weights(Path(first_half.run_dir))
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-6, atol=1e-7)
    # the run crossed both phases, and its loss went down
    records = read_metrics(Path(straight.run_dir) / "metrics.jsonl")
    assert {r["seq_len"] for r in records if r["kind"] == "train"} == {64, 256}
    assert a[12] < a[1] - 0.5


def test_checkpoints_are_safetensors_and_json_and_reload(tmp_path, tokens):
    from model import BTLMLMHeadModel

    config = tiny_config(tmp_path, tokens)
    trainer = run(config)
    folders = complete_checkpoints(Path(config.run_dir) / "checkpoints")
    assert [f.name for f in folders] == ["step-00000009", "step-00000012"]  # keep_last=2 of 3, 6, 9, 12
    assert not [p for p in folders[0].parent.iterdir() if p.name.startswith(".")]  # no temporary folders left
    for folder in folders:
        assert {p.suffix for p in folder.iterdir()} == {".json", ".safetensors"}
    state = json.loads((folders[-1] / "trainer_state.json").read_text())
    assert state["step"] == 12 and state["tokens"] == 12 * 1024
    assert state["positions"] == [6 * 16, 6 * 4]  # rows consumed per phase
    loaded = BTLMLMHeadModel.from_pretrained(folders[-1])
    ids = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, trainer.model(ids).logits)

    # continued pre-training from a Hugging Face-layout folder starts from its weights
    follow = Trainer(tiny_config(tmp_path / "next", tokens, init_from=str(folders[-1])),
                     tmp_path / "next" / "run", init_distributed())
    assert follow.step == 0
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(follow.model.state_dict()[name], tensor)


def test_a_non_finite_step_is_skipped_and_counted(tmp_path, tokens):
    trainer = Trainer(tiny_config(tmp_path, tokens), tmp_path / "run", init_distributed())
    param = trainer.model.transformer.h[0].mlp.c_fc.weight
    poison = {"steps": {3}}
    param.register_hook(lambda g: g * float("nan") if trainer.step + 1 in poison["steps"] else g)
    trainer.train_step()
    trainer.train_step()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    record = trainer.train_step()
    assert record["skipped"] and record["step"] == 3
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k  # no update from the bad step
    assert trainer.skipped == 1 and trainer.bad_in_row == 1
    record = trainer.train_step()
    assert not record["skipped"] and trainer.bad_in_row == 0
    assert trainer.positions[0] == 4 * 16  # the bad batch was consumed, not retried forever


def test_too_many_non_finite_steps_stop_with_step_and_position(tmp_path, tokens):
    trainer = Trainer(tiny_config(tmp_path, tokens, max_bad_steps=2), tmp_path / "run", init_distributed())
    trainer.train_step()
    with torch.no_grad():
        trainer.model.transformer.ln_f.weight.fill_(float("inf"))
    trainer.train_step()
    with pytest.raises(NonFiniteError, match=r"2 consecutive non-finite steps .* step 3, phase 0 \(seq_len 64\), "
                                             r"data position 32 of .*seq64/train"):
        trainer.train_step()


def write_yaml(config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(to_dict(config)), encoding="utf-8")
    return path


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_losses(tmp_path, tokens):
    """SIGKILL a real `python -m train.pretrain` mid-run, after its first checkpoint, then resume."""
    straight = tiny_config(tmp_path / "a", tokens, checkpoint_every=2)
    run(straight)
    config = tiny_config(tmp_path / "b", tokens, checkpoint_every=2)
    path = write_yaml(config, tmp_path / "b.yaml")
    cmd = [sys.executable, "-m", "train.pretrain", "--config", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Each optimizer step of the first process sleeps first (tests/fault_hook), so the
    # 10 steps after the first checkpoint take seconds: the kill lands while it trains.
    slowed = {**env, "PYTHONPATH": f"{REPO / 'tests' / 'fault_hook'}{os.pathsep}{REPO}",
              "PIPELINE_FAULT": "train.step:optimizer_step:slow=0.25"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=slowed, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = Path(config.run_dir) / "checkpoints"
    while not complete_checkpoints(ckpts) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()  # still training when killed
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = complete_checkpoints(ckpts)[-1].name
    assert int(killed_at.removeprefix("step-")) < 12  # the last checkpoint before the kill is mid-run
    assert len(train_losses(Path(config.run_dir))) < 12
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {ckpts / killed_at}" in done.stdout  # the second run continued from it
    a, b = train_losses(Path(straight.run_dir)), train_losses(Path(config.run_dir))
    assert sorted(b) == list(range(1, 13))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
    wa, wb = final_weights(Path(straight.run_dir)), final_weights(Path(config.run_dir))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-6, atol=1e-7)
    # the command line run also leaves its figures and evaluations, and says where
    run_dir = Path(config.run_dir)
    for name in ("plots/loss_curve.png", "plots/loss_by_position.png", "eval/final.json", "config.json"):
        assert (run_dir / name).stat().st_size > 0, name
    by_position = json.loads((run_dir / "eval" / "loss_by_position.json").read_text())
    assert by_position["seq_len"] == 1024 and by_position["train_seq_lens"] == [64, 256]
    assert len(by_position["loss"]) == len(by_position["bucket_start"]) >= 4
    assert all(math.isfinite(x) for x in by_position["loss"])
    assert f"plots:           {run_dir / 'plots'}" in done.stdout
