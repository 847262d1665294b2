"""``python -m model.export CHECKPOINT OUT --format hf|gguf [--quant Q]``.

``--format hf`` writes a transformers folder: native StableLM for rotary models it can
express (``--layout auto``, the default), otherwise the BTLM layout with the project's
own code as remote code. ``--format gguf`` writes a GGUF file for llama.cpp.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from model.checkpoint.folder import parse_size
from model.checkpoint.published import CheckpointError
from model.checkpoint.tokenizer import TokenizerMismatch, check_fits
from model.config import ModelConfigError
from model.hub import export as hub
from model.network import BTLMLMHeadModel
from model.sample_text import DEFAULT_CONFIG, load_settings, resolve_tokenizer
from model.stablelm import export as stablelm
from model.stablelm.layout import StableLMFormatError

FORMATS = ("hf", "gguf")
LAYOUTS = ("auto", "btlm", "stablelm")
QUANTS = ("f32", "f16", "q8_0", "q4_0", "q4_k_m")
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ExportError(RuntimeError):
    """The export cannot be made; the message says why."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m model.export", description=__doc__.splitlines()[0].strip("`"))
    parser.add_argument("checkpoint", type=Path, help="a model folder (config.json + safetensors), e.g. runs/demo/checkpoints/step-*")
    parser.add_argument("out", type=Path, help="folder (hf) or file (gguf) to write")
    parser.add_argument("--format", choices=FORMATS, default="hf")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="hf: auto = native StableLM when the model is one, else BTLM with remote code")
    parser.add_argument("--quant", choices=QUANTS, default=None, help="gguf: tensor type (default f16)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="auto", help="hf: weight dtype (auto = as stored)")
    parser.add_argument("--max-shard-size", default="5GB", help="hf: shard the weights above this size (e.g. 500MB)")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="tokenizer.json to ship (default: the checkpoint's own, else the project's)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    if args.quant is not None and args.format != "gguf":
        parser.error("--quant applies to --format gguf only")
    return args


def export_gguf_file(checkpoint: Path, out: Path, quant: str, tokenizer: Path | None = None) -> Path:
    try:
        from model.gguf.export import export_gguf
    except ModuleNotFoundError as exc:
        if exc.name != "model.gguf.export":
            raise ExportError(f"--format gguf needs {exc.name}: pip install -e .[gguf]") from None
        raise ExportError("--format gguf is not available in this version (model/gguf/export.py is missing)") from None
    return export_gguf(checkpoint, out, quant) if tokenizer is None else export_gguf(checkpoint, out, quant, tokenizer)


def export_hf(args) -> list[str]:
    model = BTLMLMHeadModel.from_pretrained(args.checkpoint, dtype=DTYPES[args.dtype]).eval()
    tokenizer = resolve_tokenizer(args.checkpoint, str(args.tokenizer) if args.tokenizer else None,
                                  load_settings(DEFAULT_CONFIG).tokenizer)
    if args.tokenizer is None:  # the default: skip it, with a note, when it does not fit the model
        problem = f"no tokenizer at {tokenizer}" if not tokenizer.is_file() else None
        if problem is None:
            try:
                check_fits(tokenizer, model.config)
            except TokenizerMismatch as exc:
                problem = str(exc)
        if problem:
            print(f"python -m model.export: {problem}; the folder gets no tokenizer files (pass --tokenizer)",
                  file=sys.stderr)
            tokenizer = None
    shard = parse_size(args.max_shard_size)
    layout = args.layout
    if layout == "auto":
        layout = "stablelm" if stablelm.can_export(model) else "btlm"
    if layout == "stablelm":
        return stablelm.export_stablelm(model, args.out, tokenizer, shard)
    return hub.export_hub(model, args.out, tokenizer, shard)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out.exists() and not args.force and (args.out.is_file() or any(args.out.iterdir())):
        print(f"python -m model.export: {args.out} exists (use --force to replace it)", file=sys.stderr)
        return 2
    try:
        if args.format == "gguf":
            path = export_gguf_file(args.checkpoint, args.out, args.quant or "f16", args.tokenizer)
            print(f"wrote {path}")
            return 0
        written = export_hf(args)
    except (ExportError, CheckpointError, ModelConfigError, StableLMFormatError, TokenizerMismatch, ValueError) as exc:
        print(f"python -m model.export: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}/: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
