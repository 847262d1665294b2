"""A training run as the scaling experiments see it: its loss records and budget.

``load_run`` reads any folder with metrics.jsonl and config.json, as `make pretrain`
and the sweep's trials write them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import BTLMConfig, BTLMLMHeadModel


@dataclass
class Run:
    name: str
    steps: np.ndarray  # optimizer steps of the loss records (1-based)
    losses: np.ndarray
    total_steps: int  # T: the step the schedule ends at
    lr: float  # peak (base) learning rate
    weight_decay: float
    total_tokens: int
    params: int

    @property
    def finished(self) -> bool:
        return len(self.steps) > 0 and int(self.steps[-1]) >= self.total_steps

    @property
    def fractions(self) -> np.ndarray:
        return self.steps / self.total_steps

    @property
    def tau(self) -> float:
        return adamw_tau(self.lr, self.weight_decay, self.total_steps)

    @property
    def tokens_per_parameter(self) -> float:
        return self.total_tokens / self.params


def adamw_tau(lr: float, weight_decay: float, steps: int) -> float:
    """AdamW's EMA timescale as a fraction of training: 1 / (lr * weight_decay * T)."""
    rate = lr * weight_decay * steps
    return math.inf if rate <= 0 else 1.0 / rate


def count_parameters(model_section: dict[str, Any], which: str) -> int:
    """Parameters of the run's model, built without initialization.

    Large models are built on the meta device (no memory); small ones on the CPU, where
    building is quicker than the meta device's one-time start-up.
    """
    config = BTLMConfig.from_yaml(model_section["config"], model_section.get("overrides") or None)
    rough = config.vocab_size * config.n_embd + 12 * config.n_layer * config.n_embd**2
    with torch.device("meta" if rough > 50_000_000 else "cpu"):
        model = BTLMLMHeadModel(config, init=False)
    return model.num_parameters(exclude_embeddings=which == "non_embedding")


def load_run(run_dir: str | Path, parameters: str) -> Run:
    run_dir = Path(run_dir)
    config_path, metrics_path = run_dir / "config.json", run_dir / "metrics.jsonl"
    for path in (config_path, metrics_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a training run folder")
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
        planned = max(round(cfg["total_tokens"] / cfg["tokens_per_batch"]), 1)
        total_steps = min(planned, cfg["max_steps"]) if cfg.get("max_steps") else planned
        lr, weight_decay, model = float(cfg["lr"]), float(cfg["weight_decay"]), cfg["model"]
        total_tokens = total_steps * int(cfg["tokens_per_batch"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{config_path}: not a training config ({exc!r})") from None
    steps, losses = [], []
    for line_no, line in enumerate(metrics_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{metrics_path}:{line_no}: not JSON ({exc})") from None
        if record.get("kind") == "train" and isinstance(record.get("loss"), (int, float)):
            steps.append(int(record["step"]))
            losses.append(float(record["loss"]))
    if not steps:
        raise ValueError(f"{metrics_path} has no training loss records")
    if isinstance(cfg.get("params"), dict):  # sweep trials record their parameter counts
        params = int(cfg["params"][parameters])
    else:
        params = count_parameters(model, parameters)
    return Run(run_dir.name, np.asarray(steps, dtype=np.float64), np.asarray(losses), total_steps,
               lr, weight_decay, total_tokens, params)
