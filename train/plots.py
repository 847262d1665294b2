"""PNG figures of a run: the loss curve and BTLM's loss-by-position figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from common.atomic import atomic_path  # noqa: E402


def plot_loss_curve(records: list[dict[str, Any]], path: str | Path) -> Path:
    train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if train:
        ax.plot([r["tokens"] for r in train], [r["loss"] for r in train], lw=1, label="train")
        for boundary in _phase_starts(train):
            ax.axvline(boundary["tokens"], color="gray", ls=":", lw=1)
            ax.text(boundary["tokens"], ax.get_ylim()[1], f" seq {boundary['seq_len']}", va="top", fontsize=8)
    lengths = sorted({k for r in evals for k in r.get("val_loss", {})}, key=int)
    for length in lengths:
        points = [(r["tokens"], r["val_loss"][length]) for r in evals if length in r.get("val_loss", {})]
        ax.plot(*zip(*points), marker="o", ms=3, lw=1, label=f"validation @ {length}")
    ax.set_xlabel("tokens")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _phase_starts(train: list[dict[str, Any]]) -> list[dict[str, Any]]:
    starts, previous = [], None
    for record in train:
        if previous is not None and record.get("phase") != previous:
            starts.append(record)
        previous = record.get("phase")
    return starts


def plot_loss_by_position(result: dict[str, Any], path: str | Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    centers = [(a + b) / 2 for a, b in zip(result["bucket_start"], result["bucket_end"])]
    ax.plot(centers, result["loss"], marker="o", ms=3)
    for length in result.get("train_seq_lens", []):
        ax.axvline(length, color="gray", ls=":", lw=1)
        ax.text(length, ax.get_ylim()[1], f" trained {length}", va="top", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("token position")
    ax.set_ylabel("mean cross-entropy (nats/token)")
    ax.set_title(f"loss by position ({result['sequences']} validation sequence(s) of {result['seq_len']} tokens)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_validation_by_position(result: dict[str, Any], path: str | Path) -> Path:
    """Loss by position in the validation spans, one curve per phase length, on the same text."""
    by_position = result["loss_by_position"]
    text = result["val_text"]
    centers = [(a + b) / 2 for a, b in zip(by_position["bucket_start"], by_position["bucket_end"])]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for length, losses in sorted(by_position["loss"].items(), key=lambda kv: int(kv[0])):
        ax.plot(centers, losses, marker="o", ms=3, lw=1, label=f"windows of {length}")
        ax.axvline(int(length), color="gray", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("token position in the validation span")
    ax.set_ylabel("mean cross-entropy (nats/token)")
    ax.set_title(f"validation loss by position, step {result['step']} "
                 f"({text['spans']} span(s) of {text['span_len']} tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
