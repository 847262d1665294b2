"""Sample text from a checkpoint: ``python -m model.sample_text --checkpoint DIR --prompt "..."``.

Defaults come from configs/model/generation.yaml; each can be overridden by a flag.
The tokenizer is the project's GPT-2 BPE (``tokenizer.json``): the checkpoint's own copy
if it has one, else the path named in the generation config.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from common.config import ConfigError, load_config
from model.hardware import flush_denormals
from model.network import BTLMLMHeadModel

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "model" / "generation.yaml"


@dataclass
class GenerationSettings:
    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int
    tokenizer: str


def load_settings(path: Path) -> GenerationSettings:
    try:
        return load_config(GenerationSettings, path)
    except ConfigError as exc:
        raise SystemExit(f"python -m model.sample_text: config error: {exc}") from None


def resolve_tokenizer(checkpoint: Path, explicit: str | None, configured: str) -> Path:
    if explicit:
        return Path(explicit)
    own = checkpoint / "tokenizer.json"
    if own.exists():
        return own
    path = Path(configured)
    return path if path.is_absolute() else REPO_ROOT / path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate text with a BTLM checkpoint (config.json + model.safetensors).")
    parser.add_argument("--checkpoint", required=True, type=Path, help="directory written by save_pretrained")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"generation defaults (default: {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--temperature", type=float, help="0 = greedy")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--tokenizer", help="tokenizer.json to use instead of the default")
    args = parser.parse_args(argv)

    settings = load_settings(args.config)
    for name in ("max_new_tokens", "temperature", "top_k", "top_p", "seed"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))

    from tokenizers import Tokenizer

    tok_path = resolve_tokenizer(args.checkpoint, args.tokenizer, settings.tokenizer)
    if not tok_path.exists():
        raise SystemExit(f"tokenizer {tok_path} does not exist (pass --tokenizer)")
    tokenizer = Tokenizer.from_file(str(tok_path))
    model = BTLMLMHeadModel.from_pretrained(args.checkpoint).eval()
    flush_denormals()
    ids = tokenizer.encode(args.prompt).ids
    if not ids:
        raise SystemExit("the prompt encodes to zero tokens")
    generator = torch.Generator().manual_seed(settings.seed)
    out = model.generate(
        torch.tensor([ids]),
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        eos_token_id=model.config.eos_token_id,
        generator=generator,
    )
    new = out[0, len(ids):].tolist()
    if new and new[-1] == model.config.eos_token_id:
        new = new[:-1]
    sys.stdout.write(args.prompt + tokenizer.decode(new) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
