"""Early stopping from a collapsed loss curve.

When a family collapses, every run's loss follows L(t) = L0 + (L(T) - L0) * g(t / T)
with one shared shape g (g(1) = 1). Given g, the first part of a trial pins down its
one unknown, L(T) - L0, by least squares, so its final loss is predicted long before
the end; a trial whose prediction is worse than the best known final loss by more than
a margin is not worth finishing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class ReferenceCurve:
    """The collapsed shape g on a grid of training fractions t/T (ascending, ending at 1)."""

    fractions: np.ndarray
    values: np.ndarray
    l0: float  # the irreducible loss the curve was normalized with

    def __post_init__(self) -> None:
        self.fractions = np.asarray(self.fractions, dtype=np.float64)
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.fractions.ndim != 1 or self.fractions.shape != self.values.shape or len(self.fractions) < 2:
            raise ValueError("reference curve needs matching 1-D fractions and values (at least 2 points)")
        if np.any(np.diff(self.fractions) <= 0):
            raise ValueError("reference curve fractions must increase")

    def __call__(self, fractions: np.ndarray) -> np.ndarray:
        """g at the given fractions (NaN outside the covered range: no extrapolation)."""
        f = np.asarray(fractions, dtype=np.float64)
        out = np.interp(f, self.fractions, self.values)
        out[(f < self.fractions[0] - 1e-12) | (f > self.fractions[-1] + 1e-12)] = np.nan
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"fractions": self.fractions.tolist(), "values": self.values.tolist(), "l0": self.l0}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReferenceCurve":
        return cls(np.asarray(data["fractions"]), np.asarray(data["values"]), float(data["l0"]))

    @classmethod
    def from_json(cls, path: str | Path) -> "ReferenceCurve":
        """Read a reference written by ``python -m train.scaling.collapse`` (its "reference" entry) or alone."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read a reference curve ({exc})") from None
        data = data.get("reference", data)
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a reference curve ({exc})") from None


@dataclass
class Prediction:
    final_loss: float  # predicted L(T)
    scale: float  # fitted L(T) - L0
    points: int  # observations used
    upto_fraction: float  # last t/T observed
    residual_rms: float  # fit residual (loss units): a large one says the trial does not follow g
    stderr: float  # standard error of final_loss from the residual noise: residual / sqrt(sum g^2)


def predict_final(fractions: Sequence[float], losses: Sequence[float], reference: ReferenceCurve,
                  fit_from: float, upto: float) -> Prediction:
    """Least-squares L(T) from the observations with fit_from <= t/T <= upto.

    Minimises sum (L_i - L0 - s * g(f_i))^2 over s, so s = sum(y g) / sum(g g).
    """
    f = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64) - reference.l0
    keep = (f >= fit_from) & (f <= upto + 1e-12) & np.isfinite(y)
    g = reference(f[keep])
    ok = np.isfinite(g)
    g, yk = g[ok], y[keep][ok]
    if len(g) < 2 or not np.any(g > 0):
        raise ValueError(
            f"cannot predict: {len(g)} observations between t/T = {fit_from} and {upto} inside the reference's "
            f"range [{reference.fractions[0]:.3f}, {reference.fractions[-1]:.3f}]"
        )
    scale = float((yk * g).sum() / (g * g).sum())
    residual = float(np.sqrt(np.sum((yk - scale * g) ** 2) / max(len(g) - 1, 1)))
    stderr = residual / float(np.sqrt((g * g).sum()))
    return Prediction(reference.l0 + scale, scale, int(len(g)), float(f[keep][ok].max()), residual, stderr)


@dataclass
class StopRule:
    """Stop a trial once its predicted final loss is surely worse than the best known one.

    "Surely": prediction - z * stderr > best + margin, so noisy small-batch losses do not
    stop a trial on the strength of a few unlucky batches.
    """

    fraction: float  # decide after this fraction of training (BTLM-style sweeps: 0.3)
    margin: float  # loss units (nats/token)
    fit_from: float  # ignore the warm-up part of the curve before this fraction
    z: float = 2.0  # standard errors of confidence required

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"early-stop fraction must be in (0, 1), got {self.fraction}")
        if not 0.0 <= self.fit_from < self.fraction:
            raise ValueError(f"early-stop fit_from must be in [0, fraction), got {self.fit_from}")
        if self.margin < 0:
            raise ValueError(f"early-stop margin must be >= 0, got {self.margin}")

    def decide(self, fractions: Sequence[float], losses: Sequence[float], reference: ReferenceCurve,
               best_final: float | None) -> tuple[bool, Prediction]:
        """(stop?, prediction) from the observations up to ``fraction`` of training."""
        prediction = predict_final(fractions, losses, reference, self.fit_from, self.fraction)
        stop = best_final is not None and prediction.final_loss - self.z * prediction.stderr > best_final + self.margin
        return stop, prediction
