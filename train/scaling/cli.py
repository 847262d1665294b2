"""The command line shared by the scaling experiments: config, run, summary, exit code."""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

from common.config import stage_cli


def experiment_main(config_class: type, doc: str, default_config: str, argv: Sequence[str] | None, prog: str,
                    run: Callable[[Any], dict[str, Any]], print_summary: Callable[[dict[str, Any]], None],
                    exit_code: Callable[[dict[str, Any]], int] = lambda report: 0) -> int:
    """Load the YAML + key=value overrides, run, print the summary; 2 on missing shards or bad settings."""
    config, _ = stage_cli(config_class, doc.splitlines()[0], default_config, argv, prog=prog)
    try:
        report = run(config)
    except (FileNotFoundError, ValueError) as exc:  # ShardError is a ValueError
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print_summary(report)
    return exit_code(report)
