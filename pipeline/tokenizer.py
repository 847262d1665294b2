"""The committed GPT-2 BPE tokenizer and batched encoding with EOS after every document.

``pipeline/assets/tokenizer.json`` (built by ``python -m pipeline.build_tokenizer``) is the
reference and the interchange format. Two encoders give the same ids from it:

- ``tokenizers``: the Hugging Face library reading tokenizer.json (always available);
- ``tiktoken``: a faster encoder built from the ranks recovered from tokenizer.json
  (needs the optional ``tiktoken`` package, the ``fast`` extra; tests check id-for-id equality);
- ``auto``: tiktoken when it is installed, else tokenizers.

Both encode a literal ``<|endoftext|>`` inside a document as ordinary text, so the only
EOS ids in the output are the ones appended after each document.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.build_tokenizer import EOS_ID, EOS_TOKEN, GPT2_PATTERN, bytes_to_unicode

TOKENIZER_PATH = Path(__file__).parent / "assets" / "tokenizer.json"
VOCAB_SIZE = EOS_ID + 1
ENCODERS = ("tokenizers", "tiktoken")


def resolve_encoder(kind: str) -> str:
    """The encoder that ``kind`` names; ``auto`` picks the fastest one installed."""
    if kind == "auto":
        return "tiktoken" if importlib.util.find_spec("tiktoken") is not None else "tokenizers"
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; choose auto or one of {ENCODERS}")
    return kind


def resolve_path(path: str | Path | None) -> Path:
    return Path(path) if path else TOKENIZER_PATH


@lru_cache(maxsize=8)
def tokenizer_sha256(path: str | Path | None = None) -> str:
    return hashlib.sha256(resolve_path(path).read_bytes()).hexdigest()


def load_tokenizer(path: str | Path | None = None):
    """The ``tokenizers.Tokenizer`` of tokenizer.json, checked to be GPT-2 shaped."""
    from tokenizers import Tokenizer

    path = resolve_path(path)
    tokenizer = Tokenizer.from_file(str(path))
    if tokenizer.token_to_id(EOS_TOKEN) != EOS_ID or tokenizer.get_vocab_size() != VOCAB_SIZE:
        raise ValueError(f"{path}: expected vocab {VOCAB_SIZE} with {EOS_TOKEN} = {EOS_ID}")
    return tokenizer


def ranks_from_tokenizer_json(path: str | Path | None = None) -> dict[bytes, int]:
    """GPT-2 ranks (token bytes -> id) recovered from tokenizer.json's byte-level vocab."""
    vocab = json.loads(resolve_path(path).read_text(encoding="utf-8"))["model"]["vocab"]
    char_to_byte = {c: b for b, c in bytes_to_unicode().items()}
    return {bytes(char_to_byte[c] for c in token): rank for token, rank in vocab.items() if token != EOS_TOKEN}


def tiktoken_encoding(path: str | Path | None = None):
    try:
        import tiktoken
    except ImportError:
        raise ImportError("encoder 'tiktoken' needs the tiktoken package: pip install -e '.[fast]'") from None
    return tiktoken.Encoding(
        name="gpt2-from-tokenizer-json",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks_from_tokenizer_json(path),
        special_tokens={EOS_TOKEN: EOS_ID},
    )


class Encoder:
    """Batched GPT-2 encoding to uint16 arrays, each ending with one EOS id."""

    def __init__(self, kind: str = "tokenizers", path: str | Path | None = None, threads: int = 1):
        kind = resolve_encoder(kind)
        self.kind = kind
        self.threads = max(1, threads)
        if kind == "tokenizers":
            # tokenizers reads this switch at each batch; its thread pool is process-wide,
            # so more than one thread means "all cores" (Ray tasks usually parallelise).
            os.environ["TOKENIZERS_PARALLELISM"] = "true" if self.threads > 1 else "false"
            self._tokenizer = load_tokenizer(path)
            self._tokenizer.encode_special_tokens = True  # "<|endoftext|>" in text is text
        else:
            load_tokenizer(path)  # same shape checks as the reference
            self._encoding = tiktoken_encoding(path)

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without EOS."""
        if not texts:
            return []
        if self.kind == "tiktoken":
            if self.threads == 1:
                return [self._encoding.encode_ordinary(t) for t in texts]
            return self._encoding.encode_ordinary_batch(list(texts), num_threads=self.threads)
        return [e.ids for e in self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]

    def encode_with_eos(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All documents' ids (EOS appended to each) as one uint16 array, plus per-document lengths."""
        if self.kind == "tiktoken" and self.threads == 1:
            # Straight to numpy: no Python int per token (about 10% of the encode time).
            eos = np.array([EOS_ID], dtype=np.uint32)
            parts = []
            for text in texts:
                parts.append(self._encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=()))
                parts.append(eos)
            lengths = np.fromiter((len(p) + 1 for p in parts[::2]), dtype=np.int64, count=len(texts))
            flat = np.concatenate(parts).astype(np.uint16) if parts else np.empty(0, np.uint16)
            return flat, lengths
        ids = self.encode_ids(texts)
        lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
        flat = np.empty(int(lengths.sum()), dtype=np.uint16)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        for start, end, doc in zip(starts.tolist(), ends.tolist(), ids):
            flat[start : end - 1] = doc
        flat[ends - 1] = EOS_ID
        return flat, lengths
