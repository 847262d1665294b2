"""Tokenizers for the shards, and batched encoding with EOS after every document.

The default is the committed GPT-2 BPE, ``pipeline/assets/tokenizer.json`` (built by
``python -m pipeline.build_tokenizer``). Any other ``tokenizers`` tokenizer works too: a
tokenizer.json file, or a model folder holding one (``describe_tokenizer``), with its own
EOS id and vocabulary size. For GPT-2 two encoders give the same ids:

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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.build_tokenizer import EOS_ID, EOS_TOKEN, GPT2_PATTERN, bytes_to_unicode
from pipeline.shard_format import TOKENIZER_NAME, token_dtype

TOKENIZER_PATH = Path(__file__).parent / "assets" / "tokenizer.json"
VOCAB_SIZE = EOS_ID + 1
ENCODERS = ("tokenizers", "tiktoken")


def resolve_encoder(kind: str, gpt2: bool = True) -> str:
    """The encoder that ``kind`` names; ``auto`` picks the fastest one installed (tiktoken
    knows only the GPT-2 BPE, so any other tokenizer encodes with tokenizers)."""
    if kind == "auto":
        return "tiktoken" if gpt2 and importlib.util.find_spec("tiktoken") is not None else "tokenizers"
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; choose auto or one of {ENCODERS}")
    if kind == "tiktoken" and not gpt2:
        raise ValueError("encoder tiktoken encodes only the committed GPT-2 BPE; use tokenizers (or auto)")
    return kind


def resolve_path(path: str | Path | None) -> Path:
    return Path(path) if path else TOKENIZER_PATH


@lru_cache(maxsize=8)
def tokenizer_sha256(path: str | Path | None = None) -> str:
    return hashlib.sha256(resolve_path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class TokenizerInfo:
    """What the shards record of their tokenizer."""

    path: str  # the tokenizer.json
    sha256: str
    eos_id: int
    vocab_size: int  # largest id + 1
    gpt2: bool  # the committed GPT-2 BPE (tiktoken can encode it)

    @property
    def dtype(self) -> np.dtype:
        return token_dtype(self.vocab_size)


def describe_tokenizer(source: str | Path | None = None) -> TokenizerInfo:
    """The tokenizer of ``source``: a tokenizer.json, a model folder holding one, or None
    (the committed GPT-2 BPE). EOS: in a folder, config.json's ``eos_token_id`` or else
    tokenizer_config.json's ``eos_token``; otherwise the ``<|endoftext|>`` token."""
    from tokenizers import Tokenizer

    path = resolve_path(source)
    folder = path if path.is_dir() else None
    if folder is not None:
        path = folder / TOKENIZER_NAME
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer {source}: no {TOKENIZER_NAME} {'in that folder' if folder else 'there'}")
    sha = tokenizer_sha256(path)
    if sha == tokenizer_sha256(TOKENIZER_PATH):
        load_tokenizer(path)  # the GPT-2 shape checks
        return TokenizerInfo(str(path.resolve()), sha, EOS_ID, VOCAB_SIZE, gpt2=True)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ValueError(f"{path}: not a tokenizers tokenizer.json ({exc})") from None
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    eos_id, origin = _folder_eos(folder, tokenizer) if folder is not None else (None, "")
    if eos_id is None:
        eos_id, origin = tokenizer.token_to_id(EOS_TOKEN), f"its {EOS_TOKEN} token"
    if eos_id is None:
        raise ValueError(f"{path}: no {EOS_TOKEN} token; pass the model folder whose config.json "
                         "(eos_token_id) or tokenizer_config.json (eos_token) names the EOS")
    vocab_size = max(vocab.values()) + 1
    if not 0 <= eos_id < vocab_size:
        raise ValueError(f"{path}: EOS id {eos_id} (from {origin}) is outside the vocabulary of {vocab_size}")
    return TokenizerInfo(str(path.resolve()), sha, int(eos_id), vocab_size, gpt2=False)


def _folder_eos(folder: Path, tokenizer) -> tuple[int | None, str]:
    """The EOS id a model folder names, and where it was found."""
    config = _read_json(folder / "config.json")
    if isinstance(config.get("eos_token_id"), int):
        return config["eos_token_id"], f"{folder / 'config.json'}: eos_token_id"
    token = _read_json(folder / "tokenizer_config.json").get("eos_token")
    token = token.get("content") if isinstance(token, dict) else token
    if isinstance(token, str):
        found = tokenizer.token_to_id(token)
        if found is None:
            raise ValueError(f"{folder / 'tokenizer_config.json'}: eos_token {token!r} is not in {TOKENIZER_NAME}")
        return found, f"{folder / 'tokenizer_config.json'}: eos_token"
    return None, ""


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
    return data if isinstance(data, dict) else {}


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
    """Batched encoding to id arrays (the shards' id type), each document ending with one EOS."""

    def __init__(self, kind: str = "tokenizers", path: str | Path | TokenizerInfo | None = None, threads: int = 1):
        info = path if isinstance(path, TokenizerInfo) else describe_tokenizer(path)
        kind = resolve_encoder(kind, info.gpt2)
        self.kind = kind
        self.info = info
        self.eos_id = info.eos_id
        self.dtype = info.dtype
        self.threads = max(1, threads)
        if kind == "tokenizers":
            from tokenizers import Tokenizer

            # tokenizers reads this switch at each batch; its thread pool is process-wide,
            # so more than one thread means "all cores" (Ray tasks usually parallelise).
            os.environ["TOKENIZERS_PARALLELISM"] = "true" if self.threads > 1 else "false"
            self._tokenizer = Tokenizer.from_file(info.path)
            self._tokenizer.encode_special_tokens = True  # "<|endoftext|>" in text is text
        else:
            self._encoding = tiktoken_encoding(info.path)

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
        """All documents' ids (EOS appended to each) as one array, plus per-document lengths."""
        if self.kind == "tiktoken" and self.threads == 1:
            # Straight to numpy: no Python int per token (about 10% of the encode time).
            eos = np.array([self.eos_id], dtype=np.uint32)
            parts = []
            for text in texts:
                parts.append(self._encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=()))
                parts.append(eos)
            lengths = np.fromiter((len(p) + 1 for p in parts[::2]), dtype=np.int64, count=len(texts))
            flat = np.concatenate(parts).astype(self.dtype) if parts else np.empty(0, self.dtype)
            return flat, lengths
        ids = self.encode_ids(texts)
        lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
        flat = np.empty(int(lengths.sum()), dtype=self.dtype)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        for start, end, doc in zip(starts.tolist(), ends.tolist(), ids):
            flat[start : end - 1] = doc
        flat[ends - 1] = self.eos_id
        return flat, lengths
