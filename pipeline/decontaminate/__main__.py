"""``python -m pipeline.decontaminate [--config FILE] [key=value ...]``"""

from __future__ import annotations

from common.config import stage_cli
from pipeline.decontaminate.config import DEFAULT_CONFIG, DecontaminateConfig
from pipeline.decontaminate.driver import run
from pipeline.kernel import TaskFailed


def main(argv: list[str] | None = None) -> None:
    cfg, _ = stage_cli(DecontaminateConfig, "Word n-gram decontamination of a corpus against evaluation sets.",
                       DEFAULT_CONFIG, argv, prog="python -m pipeline.decontaminate")
    try:
        run(cfg)
    except (TaskFailed, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"python -m pipeline.decontaminate: error: {exc}") from None


if __name__ == "__main__":
    main()
