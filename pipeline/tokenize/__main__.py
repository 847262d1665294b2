"""``python -m pipeline.tokenize [--config FILE] [key=value ...]``"""

from common.config import stage_cli
from common.storage import location
from pipeline.kernel import TaskFailed
from pipeline.shard_format import MANIFEST_NAME
from pipeline.tokenize.config import DEFAULT_CONFIG, TokenizeConfig
from pipeline.tokenize.driver import run
from pipeline.tokenize.report import print_summary


def main(argv: list[str] | None = None) -> None:
    cfg, _ = stage_cli(TokenizeConfig, "BPE (GPT-2's or the model's own), train/holdout split, decontamination, packed Arrow shards and/or Megatron's indexed dataset.",
                       DEFAULT_CONFIG, argv, prog="python -m pipeline.tokenize")
    try:
        report = run(cfg)
    except (TaskFailed, FileNotFoundError) as exc:
        raise SystemExit(f"python -m pipeline.tokenize: error: {exc}") from None
    print_summary(report)
    print(f"wrote {location(cfg.output) / MANIFEST_NAME}")


if __name__ == "__main__":
    main()
