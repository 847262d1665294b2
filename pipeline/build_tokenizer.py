"""Derive the committed GPT-2 ``tokenizer.json`` from the genuine GPT-2 BPE ranks.

The ranks (``gpt2.tiktoken``: one ``base64(token) rank`` per line, 50,256 lines) ship
inside the ``openai-whisper`` source distribution on PyPI. Their SHA-256 equals the one
tiktoken publishes for ``r50k_base``, and is checked before anything is derived.

A byte-level BPE needs merges, not ranks: the merge that creates a token is found by
running BPE on the token's bytes with the lower-ranked tokens only, which ends in
exactly two parts. The output is written by hand-rolled, key-ordered JSON so the same
ranks always give a byte-identical file.

    python -m pipeline.build_tokenizer                      # download the sdist with pip
    python -m pipeline.build_tokenizer --source gpt2.tiktoken
    python -m pipeline.build_tokenizer --source openai_whisper-20250625.tar.gz
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from common.atomic import write_bytes

RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
RANKS_MEMBER = "whisper/assets/gpt2.tiktoken"
EOS_TOKEN = "<|endoftext|>"
EOS_ID = 50256
DEFAULT_OUTPUT = Path(__file__).parent / "assets" / "tokenizer.json"

# GPT-2's pre-tokenization pattern (the same as the byte-level pre-tokenizer's default).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def parse_ranks(data: bytes, origin: str) -> dict[bytes, int]:
    digest = hashlib.sha256(data).hexdigest()
    if digest != RANKS_SHA256:
        raise ValueError(f"{origin}: SHA-256 {digest} is not the GPT-2 ranks' {RANKS_SHA256}")
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(data.splitlines(), start=1):
        if not line:
            continue
        token, _, rank = line.partition(b" ")
        try:
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as exc:
            raise ValueError(f"{origin}:{number}: not 'base64 rank': {exc}") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{origin}: ranks are not 0..{len(ranks) - 1} without gaps")
    return ranks


def read_ranks_bytes(source: Path) -> bytes:
    """Raw bytes of gpt2.tiktoken, from the file itself or from the sdist holding it."""
    if source.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source, "r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith("/" + RANKS_MEMBER):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    return handle.read()
        raise FileNotFoundError(f"{source}: no {RANKS_MEMBER} inside")
    return source.read_bytes()


def download_sdist(directory: Path) -> Path:
    """Fetch the openai-whisper source distribution through pip (the only network step)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "openai-whisper", "-d", str(directory)]
    subprocess.run(cmd, check=True)
    found = sorted(directory.glob("openai_whisper-*.tar.gz")) + sorted(directory.glob("openai-whisper-*.tar.gz"))
    if not found:
        raise FileNotFoundError(f"pip download left no openai-whisper sdist in {directory}")
    return found[-1]


def bpe_parts(token: bytes, ranks: dict[bytes, int], max_rank: int) -> list[bytes]:
    """Run byte-level BPE on ``token`` using only tokens ranked below ``max_rank``."""
    parts = [bytes([b]) for b in token]
    while True:
        best_index, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best_index, best_rank = i, rank
        if best_index < 0:
            return parts
        parts[best_index : best_index + 2] = [parts[best_index] + parts[best_index + 1]]


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """One merge per multi-byte token, in rank order (its position is its priority)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = bpe_parts(token, ranks, rank)
        if len(parts) != 2:
            raise ValueError(f"token of rank {rank} ({token!r}) does not reduce to one merge: {parts!r}")
        merges.append((parts[0], parts[1]))
    return merges


def tokenizer_document(ranks: dict[bytes, int]) -> dict:
    """The tokenizers JSON of GPT-2's byte-level BPE, with <|endoftext|> = 50256."""
    if len(ranks) != EOS_ID:
        raise ValueError(f"expected {EOS_ID} ranks, got {len(ranks)}")
    byte_chars = bytes_to_unicode()

    def as_text(token: bytes) -> str:
        return "".join(byte_chars[b] for b in token)

    vocab = {as_text(token): rank for token, rank in sorted(ranks.items(), key=lambda item: item[1])}
    vocab[EOS_TOKEN] = EOS_ID
    merges = [f"{as_text(a)} {as_text(b)}" for a, b in derive_merges(ranks)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": EOS_ID,
                "content": EOS_TOKEN,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        ],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": {**byte_level, "trim_offsets": False},
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def render(document: dict) -> bytes:
    # Fixed formatting: insertion-ordered keys, one vocab entry / merge per line.
    return (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def build(source: Path | None, output: Path) -> str:
    """Write tokenizer.json to ``output``; return its SHA-256."""
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            source = download_sdist(Path(tmp))
        data = read_ranks_bytes(source)
    ranks = parse_ranks(data, str(source))
    payload = render(tokenizer_document(ranks))
    write_bytes(output, payload)
    return hashlib.sha256(payload).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.build_tokenizer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="gpt2.tiktoken or the openai-whisper sdist (.tar.gz); default: download with pip")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="default: pipeline/assets/tokenizer.json")
    args = parser.parse_args(argv)
    digest = build(args.source, args.output)
    print(f"wrote {args.output} (sha256 {digest})")


if __name__ == "__main__":
    main()
