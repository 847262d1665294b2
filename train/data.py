"""Memory-mapped reading of packed token shards and the deterministic batch order.

A ``ShardSet`` maps every row of one ``seq<L>/<split>`` folder without copying it into
RAM. A ``PhaseStream`` orders the rows of a training phase: epoch ``e`` is a seeded
permutation of all rows, so position ``p`` of the stream is the same row on every run,
every rank and after every resume. A step consumes ``rows_per_step`` consecutive stream
positions; data-parallel rank ``r`` takes the ``r``-th contiguous slice of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch

from pipeline.shard_format import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SHARD_GLOB,
    check_metadata,
    iter_batches,
    listed_shards,
    read_manifest,
    read_metadata,
    split_dir,
)


class ShardError(ValueError):
    """Shards are missing or do not match what the run expects; the message says what."""


@dataclass
class _Block:
    ids: np.ndarray  # [rows, seq_len] uint16 or uint32, a view into the memory map
    start_offsets: np.ndarray  # [rows + 1] offsets into start_values
    start_values: np.ndarray  # document start positions of all rows


class ShardSet:
    """All rows of one ``seq<L>/<split>`` folder, memory-mapped."""

    def __init__(self, root: str | Path, seq_len: int, split: str, expected: Mapping[str, object]):
        self.folder = split_dir(root, seq_len, split)
        self.seq_len = seq_len
        self.split = split
        paths = sorted(self.folder.glob(SHARD_GLOB))
        if not paths:
            raise ShardError(f"no shards ({SHARD_GLOB}) in {self.folder}: run `make tokenize` or fix data.root")
        listed_rows = _check_manifest(self.folder, paths)
        self.metadata: dict[str, str] = {}
        self.blocks: list[_Block] = []
        for path in paths:
            meta = read_metadata(path)
            try:
                check_metadata(path, meta, {**expected, "seq_len": seq_len, "split": split})
            except ValueError as exc:
                raise ShardError(str(exc)) from None
            self.metadata = meta
            blocks = list(_map_blocks(path, seq_len))
            rows = sum(len(b.ids) for b in blocks)
            if path.name in listed_rows and listed_rows[path.name] != rows:
                raise ShardError(f"shard {path} has {rows} rows, its manifest lists {listed_rows[path.name]}")
            self.blocks.extend(blocks)
        sizes = np.array([len(b.ids) for b in self.blocks], dtype=np.int64)
        self._block_end = np.cumsum(sizes)
        self.num_rows = int(self._block_end[-1]) if len(sizes) else 0
        if self.num_rows == 0:
            raise ShardError(f"shards in {self.folder} hold no rows")

    def __len__(self) -> int:
        return self.num_rows

    def _locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        block = np.searchsorted(self._block_end, rows, side="right")
        first = np.where(block > 0, self._block_end[block - 1], 0)
        return block, rows - first

    def tokens(self, rows: np.ndarray) -> np.ndarray:
        """Token ids of the given rows as int64 [len(rows), seq_len]."""
        out = np.empty((len(rows), self.seq_len), dtype=np.int64)
        for i, (b, r) in enumerate(zip(*self._locate(np.asarray(rows, dtype=np.int64)))):
            out[i] = self.blocks[b].ids[r]
        return out

    def first_tokens(self, count: int) -> np.ndarray:
        """The first ``count`` token ids of the split, row after row, as int64."""
        rows = -(-count // self.seq_len)
        if rows > self.num_rows:
            raise ShardError(f"{self.folder} holds {self.num_rows} rows of {self.seq_len} tokens; "
                             f"{count} tokens need {rows} rows")
        return self.tokens(np.arange(rows)).reshape(-1)[:count]

    def segment_ids(self, rows: np.ndarray) -> np.ndarray:
        """Per-token document index within each row (attention stays inside a document)."""
        out = np.zeros((len(rows), self.seq_len), dtype=np.int64)
        for i, (b, r) in enumerate(zip(*self._locate(np.asarray(rows, dtype=np.int64)))):
            block = self.blocks[b]
            starts = block.start_values[block.start_offsets[r] : block.start_offsets[r + 1]]
            marks = np.zeros(self.seq_len, dtype=np.int64)
            marks[starts[(starts > 0) & (starts < self.seq_len)]] = 1
            out[i] = np.cumsum(marks)
        return out


def _map_blocks(path: Path, seq_len: int) -> Iterator[_Block]:
    for batch in iter_batches(path):
        ids = batch.column("input_ids")
        if ids.null_count:
            raise ShardError(f"shard {path}: input_ids has null rows")
        flat = ids.flatten().to_numpy(zero_copy_only=True)
        starts = batch.column("doc_starts")
        offsets = starts.offsets.to_numpy(zero_copy_only=True)
        values = starts.values.to_numpy(zero_copy_only=True)
        yield _Block(ids=flat.reshape(-1, seq_len), start_offsets=offsets - offsets[0], start_values=values[offsets[0]:])


def _check_manifest(folder: Path, paths: list[Path]) -> dict[str, int]:
    """When the folder has a manifest, every shard it lists must exist (no partial output).

    Returns the row count the manifest records for each shard name.
    """
    try:
        listed = listed_shards(read_manifest(folder))
    except ValueError as exc:
        raise ShardError(str(exc)) from None
    present = {p.name for p in paths}
    for name in listed:
        if name not in present:
            raise ShardError(f"{folder / MANIFEST_NAME} lists shard {name}, which is missing from {folder}")
    return {name: e["rows"] for name, e in listed.items() if isinstance(e.get("rows"), int)}


def expected_metadata(eos_id: int, tokenizer_sha256: str | None) -> dict[str, object]:
    expected: dict[str, object] = {"format_version": FORMAT_VERSION, "eos_id": eos_id}
    if tokenizer_sha256:
        expected["tokenizer_sha256"] = tokenizer_sha256
    return expected


def open_shard_sets(
    root: str | Path,
    seq_lens: list[int],
    splits: list[str],
    eos_id: int,
    vocab_size: int,
    tokenizer_sha256: str | None,
) -> dict[tuple[int, str], ShardSet]:
    """Open and check every (seq_len, split) folder the run needs, before any training.

    All shards must agree on the tokenizer: the configured hash when one is given,
    otherwise the hash of the first shard opened.
    """
    sets: dict[tuple[int, str], ShardSet] = {}
    for seq_len in seq_lens:
        for split in splits:
            try:
                sets[(seq_len, split)] = shard_set = ShardSet(
                    root, seq_len, split, expected_metadata(eos_id, tokenizer_sha256)
                )
            except ShardError as exc:
                if "eos_id:" not in str(exc):
                    raise
                raise ShardError(f"{exc} (the model's eos_token_id); tokenize with the model's own tokenizer: "
                                 "python -m pipeline.tokenize tokenizer=<the model folder>") from None
            tokenizer_sha256 = tokenizer_sha256 or shard_set.metadata.get("tokenizer_sha256")
            shard_vocab = int(shard_set.metadata.get("vocab_size", 0) or 0)
            if shard_vocab > vocab_size:
                raise ShardError(
                    f"shards in {shard_set.folder} use vocab_size {shard_vocab}, larger than the model's {vocab_size}"
                )
    return sets


class PhaseStream:
    """The endless, seeded order of one phase's rows: epoch e is permutation(seed, phase, e)."""

    def __init__(self, num_rows: int, seed: int, phase_index: int):
        self.num_rows = num_rows
        self.seed = seed
        self.phase_index = phase_index
        self._epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, self.phase_index, epoch])
            self._perm = rng.permutation(self.num_rows)
            self._epoch = epoch
        return self._perm

    def rows(self, start: int, count: int) -> np.ndarray:
        """Row indices at stream positions [start, start + count)."""
        out = np.empty(count, dtype=np.int64)
        filled = 0
        while filled < count:
            pos = start + filled
            epoch, offset = divmod(pos, self.num_rows)
            take = min(count - filled, self.num_rows - offset)
            out[filled : filled + take] = self.permutation(epoch)[offset : offset + take]
            filled += take
        return out


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # [rows, seq_len] int64
    segment_ids: torch.Tensor | None


class TrainBatches:
    """Micro-batches of one rank for a step, read from a phase's stream position."""

    def __init__(self, shards: ShardSet, stream: PhaseStream, rows_per_step: int, micro_rows: int,
                 rank: int, world_size: int, with_segments: bool):
        if rows_per_step % (micro_rows * world_size):
            raise ValueError(
                f"a step of {rows_per_step} rows at seq_len {shards.seq_len} does not split into "
                f"{world_size} rank(s) x micro-batches of {micro_rows} rows; "
                "change tokens_per_batch or micro_batch_tokens"
            )
        self.shards = shards
        self.stream = stream
        self.rows_per_step = rows_per_step
        self.micro_rows = micro_rows
        self.rank = rank
        self.world_size = world_size
        self.with_segments = with_segments
        self.accumulation = rows_per_step // (micro_rows * world_size)

    def step(self, position: int) -> list[MicroBatch]:
        """The micro-batches of this rank for the step that starts at stream ``position``."""
        per_rank = self.rows_per_step // self.world_size
        rows = self.stream.rows(position + self.rank * per_rank, per_rank)
        batches = []
        for i in range(0, per_rank, self.micro_rows):
            chunk = rows[i : i + self.micro_rows]
            ids = torch.from_numpy(self.shards.tokens(chunk))
            seg = torch.from_numpy(self.shards.segment_ids(chunk)) if self.with_segments else None
            batches.append(MicroBatch(ids, seg))
        return batches


class PieceBatches:
    """Batches of fixed-length pieces cut from shard rows, in one seeded order.

    Short-sequence experiments (the learning-rate sweep) read every piece of a longer
    row; the order depends only on ``seed``, so every trial sees the same batches.
    """

    def __init__(self, shards: ShardSet, seq_len: int, seed: int):
        if shards.seq_len % seq_len:
            raise ValueError(f"seq_len {seq_len} does not divide the shards' row length {shards.seq_len}")
        self.shards = shards
        self.seq_len = seq_len
        self.per_row = shards.seq_len // seq_len
        self.order = np.random.default_rng(seed).permutation(len(shards) * self.per_row)

    def __len__(self) -> int:
        return len(self.order)

    def batch(self, start: int, size: int) -> torch.Tensor:
        """Pieces at positions [start, start + size) of the order (wrapping), as int64 [size, seq_len]."""
        idx = self.order[np.arange(start, start + size) % len(self.order)]
        rows, pieces = np.divmod(idx, self.per_row)
        tokens = self.shards.tokens(rows)
        out = np.stack([tokens[i, p * self.seq_len:(p + 1) * self.seq_len] for i, p in enumerate(pieces)])
        return torch.from_numpy(out.astype(np.int64))
