"""Benchmark: the tokenize stage writing Arrow shards only vs Arrow + Megatron's indexed
dataset, in the same run, on the same corpus.

    python bench/bench_tokenize_formats.py [CORPUS] [--repeats 3] [--cpus 2] [--tokenizer PATH]

CORPUS defaults to data/dedup/corpus. After one untimed run (Ray workers keep their
encoder, so the first run of a session pays for building it), the two settings alternate
in both orders (arrow, both; both, arrow; ...) into fresh output folders on one Ray
instance, so slow spells of a shared machine and order effects hit both; prints the median wall seconds of each, their ratio
(the goal: both formats within 1.2x of Arrow only) and the Megatron step's own seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.config import load_config  # noqa: E402
from pipeline.kernel import init_ray  # noqa: E402
from pipeline.tokenize import DEFAULT_CONFIG, TokenizeConfig, run  # noqa: E402

SETTINGS = {"arrow": "formats=[arrow]", "arrow+megatron": "formats=[arrow,megatron]"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="?", default="data/dedup/corpus")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json or model folder (default: GPT-2 BPE)")
    args = parser.parse_args(argv)
    init_ray(num_cpus=args.cpus)
    walls: dict[str, list[float]] = {name: [] for name in SETTINGS}
    megatron_s: list[float] = []
    input_mb = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-formats-") as tmp:
        def tokenize(output: str, formats: str) -> dict:
            overrides = [f"input={args.corpus}", f"output={tmp}/{output}", formats, "run.progress=false",
                         f"run.num_cpus={args.cpus}"] + ([f"tokenizer={args.tokenizer}"] if args.tokenizer else [])
            return run(load_config(TokenizeConfig, REPO / DEFAULT_CONFIG, overrides))

        tokenize("warm-up", SETTINGS["arrow"])
        for repeat in range(args.repeats):
            order = list(SETTINGS.items())[:: 1 if repeat % 2 == 0 else -1]
            for name, formats in order:
                report = tokenize(f"{name}-{repeat}", formats)
                walls[name].append(report["timing"]["wall_s"])
                input_mb = report["timing"]["input_bytes"] / 1e6
                if "megatron_s" in report["timing"]:
                    megatron_s.append(report["timing"]["megatron_s"])
                print(f"repeat {repeat} {name:<15} {report['timing']['wall_s']:7.2f} s", flush=True)
    medians = {name: statistics.median(v) for name, v in walls.items()}
    result = {
        "corpus": args.corpus, "input_mb": round(input_mb, 1), "cpus": args.cpus, "repeats": args.repeats,
        "wall_s": walls, "median_wall_s": medians,
        "median_mb_per_s": {name: round(input_mb / m, 2) for name, m in medians.items()},
        "ratio_both_to_arrow": round(medians["arrow+megatron"] / medians["arrow"], 3),
        "median_megatron_step_cpu_s": round(statistics.median(megatron_s), 2) if megatron_s else None,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
