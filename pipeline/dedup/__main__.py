"""``python -m pipeline.dedup [--config FILE] [key=value ...]``"""

from common.config import stage_cli
from pipeline.dedup.config import DEFAULT_CONFIG, DedupStageConfig
from pipeline.dedup.driver import run
from pipeline.kernel import TaskFailed


def main(argv: list[str] | None = None) -> None:
    cfg, _ = stage_cli(DedupStageConfig, "Normalize, filter and MinHash-LSH deduplicate a corpus.", DEFAULT_CONFIG,
                       argv, prog="python -m pipeline.dedup")
    try:
        run(cfg)
    except (TaskFailed, FileNotFoundError) as exc:
        raise SystemExit(f"python -m pipeline.dedup: error: {exc}") from None


if __name__ == "__main__":
    main()
