"""``python -m pipeline.sample [--config FILE] [key=value ...]``"""

from common.config import stage_cli
from pipeline.kernel import TaskFailed
from pipeline.sample.build import MANIFEST, format_table, run
from pipeline.sample.config import DEFAULT_CONFIG, SampleConfig


def main(argv: list[str] | None = None) -> None:
    cfg, _ = stage_cli(
        SampleConfig,
        "Build the sample corpus from text on this machine (Python sources, licenses, man pages, docs).",
        DEFAULT_CONFIG,
        argv,
        prog="python -m pipeline.sample",
    )
    try:
        manifest = run(cfg)
    except (TaskFailed, FileNotFoundError) as exc:
        raise SystemExit(f"python -m pipeline.sample: error: {exc}") from None
    print(format_table(manifest))
    print(f"wrote {cfg.output}/ ({MANIFEST} last)")


if __name__ == "__main__":
    main()
