"""Settings of the learning-rate sweep (values live in configs/train/mup_sweep.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class DataSection:
    root: str  # `make tokenize` output
    shard_seq_len: int  # rows of this length are cut into seq_len pieces
    train_split: str
    validation_split: str


@dataclass
class EarlyStopSection:
    enabled: bool
    fraction: float  # decide after this fraction of a trial
    fit_from: float  # the warm-up before this fraction is not fitted
    margin: float  # stop when predicted final loss - z * its standard error > best final loss of the width + margin
    z: float
    min_reference: int  # finished trials of the same width needed before any stop
    l0: float  # irreducible loss used to normalize the reference (0 = plain ratio)
    smooth_fraction: float
    final_fraction: float
    grid_points: int


@dataclass
class SweepConfig:
    model: str  # base model YAML
    widths: list[int]
    head_dim: int
    n_layer: int
    n_inner_ratio: float
    parameterizations: dict[str, dict[str, Any]]  # name -> model overrides
    compare: list[str]  # which of the parameterizations to sweep
    lrs: list[float]  # base learning rates (muP: hidden weights get lr * base_width / width)
    seeds: list[int]
    steps: int  # optimizer steps per trial
    batch_size: int  # sequences per step
    seq_len: int
    warmup_fraction: float
    decay_to: float
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    clip: float
    eval_batches: int  # held-out batches for the loss that ranks learning rates
    diverge_factor: float  # stop a trial once its loss exceeds this x its first loss
    early_stop: EarlyStopSection
    data: DataSection
    workers: int  # trials in parallel
    threads_per_trial: int
    output: str
    progress: bool = True
