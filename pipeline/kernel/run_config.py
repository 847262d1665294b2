"""The ``run`` section every stage shares: how to compute, never what.

Outputs are byte-identical whatever these are; a stage adds its own knobs by
subclassing (``@dataclass(kw_only=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class RunConfig:
    num_cpus: int | None = None  # local Ray CPUs; null = all (with RAY_ADDRESS the cluster's)
    progress: bool = True  # progress bars on stderr
    keep_work: bool = True  # keep <output>/_work after success (resume state, intermediate files)
    retries: int = 3  # further attempts of a task whose worker or node died or that hit an I/O error
    # Where intermediate files go: auto = <output>/_work, except for an object-store output
    # with every task on this machine (the embedded Ray), where a folder below the local
    # cache (<temp>/btlm-cache/stage-work) is faster; "output" = always <output>/_work (what a
    # cluster with no shared disk needs); or a local folder or URL to hold it.
    work_dir: str = "auto"

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"run.num_cpus must be at least 1, got {self.num_cpus}")
        if self.retries < 0:
            raise ValueError(f"run.retries must be >= 0, got {self.retries}")
