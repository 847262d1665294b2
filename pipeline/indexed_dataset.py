"""Megatron's indexed dataset (``<prefix>.bin`` + ``<prefix>.idx``), written with numpy.

The format Megatron-LM, NeMo and GPT-NeoX read (megatron-core's
``megatron/core/datasets/indexed_dataset.py``, ``IndexedDataset``):

    <prefix>.bin   every sequence's token ids, end to end, in the index's dtype
    <prefix>.idx   b"MMIDIDX\\x00\\x00", version <Q = 1, dtype code <B,
                   sequence count <Q, document count <Q (= documents + 1),
                   sequence lengths int32[sequences], byte offsets into .bin int64[sequences],
                   document indices int64[documents + 1] (0, then the sequence that ends each one)

One document is one sequence here, as Megatron's ``tools/preprocess_data.py`` writes it
without sentence splitting; with ``--append-eod`` it appends the EOS id to every
document, and so does this writer's caller. Megatron packs the sequences into samples
itself, so nothing is cut or padded.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from common.atomic import temp_path
from pipeline.shard_format import HashingWriter

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
# megatron.core.datasets.indexed_dataset.DType codes of the integer types it can hold ids in.
DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
               np.dtype(np.int64): 5, np.dtype(np.uint16): 8}


def megatron_dtype(vocab_size: int) -> np.dtype:
    """The smallest type of Megatron's index that holds every id (it has no uint32)."""
    for dtype in (np.uint8, np.uint16, np.int32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"vocabulary of {vocab_size} does not fit Megatron's int32 ids")


def bin_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.bin")


def idx_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.idx")


class IndexedDatasetWriter:
    """Append documents (each one sequence) to ``<prefix>.bin``; ``close`` writes the index.

    Both files are written under temporary names and renamed when complete, the index
    last, so a ``<prefix>.idx`` is only ever beside a whole ``.bin``.
    """

    def __init__(self, prefix: str | Path, vocab_size: int):
        self.prefix = Path(prefix)
        self.dtype = megatron_dtype(vocab_size)
        self._bin_tmp = temp_path(bin_path(prefix))
        self._fh = open(self._bin_tmp, "wb")
        self._bin = HashingWriter(self._fh)
        self._lengths: list[np.ndarray] = []
        self.documents = 0
        self.tokens = 0

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Documents whose ids (EOS included) are ``tokens`` end to end, ``lengths`` each's count."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != len(tokens):
            raise ValueError("tokens and lengths of a batch do not agree")
        if len(lengths) and int(lengths.max()) > np.iinfo(np.int32).max:
            raise ValueError("a document longer than 2**31 - 1 tokens does not fit Megatron's index")
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self._lengths.append(lengths.astype(np.int32))
        self.documents += len(lengths)
        self.tokens += len(tokens)

    def close(self) -> dict:
        """Finish both files; returns their sizes and SHA-256 for the manifest."""
        self._fh.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.empty(0, np.int32)
        pointers = np.concatenate(([0], np.cumsum(lengths.astype(np.int64))[:-1])) * self.dtype.itemsize
        index = b"".join([
            INDEX_HEADER,
            struct.pack("<Q", INDEX_VERSION),
            struct.pack("<B", DTYPE_CODES[self.dtype]),
            struct.pack("<Q", len(lengths)),
            struct.pack("<Q", len(lengths) + 1),
            lengths.tobytes(),
            pointers[: len(lengths)].astype(np.int64).tobytes(),
            np.arange(len(lengths) + 1, dtype=np.int64).tobytes(),
        ])
        os.replace(self._bin_tmp, bin_path(self.prefix))
        idx_tmp = temp_path(idx_path(self.prefix))
        idx_tmp.write_bytes(index)
        os.replace(idx_tmp, idx_path(self.prefix))
        return {
            "prefix": self.prefix.name,
            "dtype": self.dtype.name,
            "documents": self.documents,
            "tokens": self.tokens,
            "bin": {"bytes": self._bin.size, "sha256": self._bin.sha256.hexdigest()},
            "idx": {"bytes": len(index), "sha256": hashlib.sha256(index).hexdigest()},
        }

    def abort(self) -> None:
        self._fh.close()
        self._bin_tmp.unlink(missing_ok=True)

