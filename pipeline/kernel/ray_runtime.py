"""Start (or join) Ray the same way for every stage.

Default: an embedded local Ray with a fixed CPU count and no dashboard. With
``RAY_ADDRESS`` set, the same job runs on that cluster instead. If Ray is already
initialised in this process (tests share one instance), it is reused as is.

``on_this_machine_only()`` tells a stage whether every task runs on this machine (the
embedded Ray), so its work folder may stay on the local disk.
"""

from __future__ import annotations

import logging
import os

_EMBEDDED = False  # init_ray started a Ray of its own in this process (one machine, this job)


def init_ray(num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    # Keep Ray's own chatter (and its usage-stats prompt) out of the user's terminal.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        return
    global _EMBEDDED
    _EMBEDDED = True
    ray.init(
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        logging_level=logging.WARNING,
        configure_logging=True,
        # Workers import the project from the working tree, like the driver.
        runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}},
    )


def on_this_machine_only() -> bool:
    """Whether every task of this job runs on this machine: Ray embedded by ``init_ray``,
    now or when the first step starts it. A joined cluster (``RAY_ADDRESS``, or a Ray this
    process did not start) may run tasks on other nodes, whose disks the driver cannot see."""
    import ray

    if ray.is_initialized():
        return _EMBEDDED
    return not os.environ.get("RAY_ADDRESS")
