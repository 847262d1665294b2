"""Start (or join) Ray the same way for every stage.

Default: an embedded local Ray with a fixed CPU count and no dashboard. With
``RAY_ADDRESS`` set, the same job runs on that cluster instead. If Ray is already
initialised in this process (tests share one instance), it is reused as is.
"""

from __future__ import annotations

import logging
import os


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
    ray.init(
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        logging_level=logging.WARNING,
        configure_logging=True,
        # Workers import the project from the working tree, like the driver.
        runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}},
    )
