"""The ``slimpajama-btlm`` command: one subcommand per stage, each forwarding its arguments to
the stage's own command line (``slimpajama-btlm dedup --help`` is ``python -m pipeline.dedup --help``).

Stages are named here as module paths and imported only when their subcommand runs: ``common``
imports nothing of the project statically, and ``slimpajama-btlm --help`` stays instant.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

PROG = "slimpajama-btlm"

# subcommand -> (module with main(argv), one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "corpus": ("pipeline.sample.__main__", "build the sample corpus from text on this machine"),
    "dedup": ("pipeline.dedup.__main__", "normalize, filter and MinHash-LSH deduplicate a corpus"),
    "decontaminate": ("pipeline.decontaminate.__main__", "n-gram overlap of a corpus with evaluation sets"),
    "tokenize": ("pipeline.tokenize.__main__", "any tokenizer, train/holdout split, Arrow shards, Megatron files"),
    "pretrain": ("train.pretrain", "train a BTLM model on token shards"),
    "stats": ("pipeline.stats", "statistics and checks of token shards"),
    "eval": ("train.harness", "lm-evaluation-harness on a checkpoint, offline"),
    "export": ("model.export.__main__", "export a checkpoint: transformers folder, StableLM or GGUF"),
    "generate": ("model.sample_text", "sample text from a checkpoint"),
    "coord-check": ("train.scaling.coord_check", "muP coordinate check across widths"),
    "mup-sweep": ("train.scaling.mup_sweep", "learning-rate transfer across widths"),
    "collapse": ("train.scaling.collapse", "loss-curve collapse of finished runs"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [--help | --config FILE] [key=value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_line}" for name, (_, help_line) in COMMANDS.items()]
    lines += ["", f"`{PROG} COMMAND --help` shows a command's own options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"{PROG}: unknown command {name!r} (one of: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
