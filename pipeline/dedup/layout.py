"""Where every file of the dedup stage lives, in one place, and how arrays are stored.

Input files are numbered in sorted order (``f000003``), hash partitions too
(``p0007``). Documents get dense int64 ids in input order (files, then lines), which
is also the order of their string ids within each file; ``offsets[i]`` is the first
dense id of file i.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import atomic_path
from pipeline.kernel import file_key

# The stage's published outputs (names under <output>).
CORPUS, LEDGER, REPORT, QUARANTINE, INDEX = "corpus", "ledger.parquet", "report.json", "quarantine.jsonl", "index"
OUTPUTS = (CORPUS, LEDGER, REPORT, QUARANTINE, INDEX)


def part_key(p: int) -> str:
    return f"p{p:04d}"


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


class NpyRows:
    """Rows of a 2-D .npy file read with positioned reads, never memory-mapped: a task
    that gathers a few rows from many files holds those rows, not every page it touched
    (a mapped file's pages would stay in the task's resident memory)."""

    def __init__(self, path: Path):
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(fh)
            self.offset = fh.tell()
        if fortran or len(shape) != 2:
            raise ValueError(f"{path}: expected a C-ordered 2-D array, got shape {shape}")
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.row_bytes = shape[1] * self.dtype.itemsize
        self.fd = os.open(path, os.O_RDONLY)

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (any order), read run by run of consecutive rows."""
        out = np.empty((len(index), self.shape[1]), dtype=self.dtype)
        order = np.argsort(index, kind="stable")
        wanted = index[order]
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
        for run in np.split(np.arange(len(wanted)), breaks):
            if len(run) == 0:
                continue
            first, count = int(wanted[run[0]]), len(run)
            data = os.pread(self.fd, count * self.row_bytes, self.offset + first * self.row_bytes)
            out[order[run]] = np.frombuffer(data, dtype=self.dtype).reshape(count, self.shape[1])
        return out

    def close(self) -> None:
        os.close(self.fd)


def load_npz(path: Path, name: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        return z[name]


@dataclass(frozen=True)
class Layout:
    work: Path  # <output>/_work
    reference_files: int = 0  # files 0 .. reference_files - 1 come from a reference index

    def _prepared(self, f: int) -> Path:  # what prepare writes, or the reference step for its files
        return self.work / ("reference" if f < self.reference_files else "prepare")

    # 1. prepare: per input file
    def table(self, f: int) -> Path:  # the document table (parquet)
        return self._prepared(f) / f"{file_key(f)}.parquet"

    def meta(self, f: int) -> Path:  # status, keep rank and line of every document (npz)
        return self._prepared(f) / f"{file_key(f)}.meta.npz"

    def hash_rows(self, f: int) -> Path:  # exact-hash rows split by partition (npz)
        return self._prepared(f) / f"{file_key(f)}.hash.npz"

    def signatures(self, f: int) -> Path:  # MinHash signatures of the file's candidates
        return self._prepared(f) / f"{file_key(f)}.sig.npy"

    def signature_valid(self, f: int) -> Path:
        return self._prepared(f) / f"{file_key(f)}.sigvalid.npy"

    def signature_docs(self, f: int) -> Path:  # local document index of each signature row
        return self._prepared(f) / f"{file_key(f)}.siglocal.npy"

    # 2. exact: per partition
    def exact(self, p: int) -> Path:  # edges to each group's representative, non-representatives
        return self.work / "exact" / f"{part_key(p)}.npz"

    # 3. bands: per input file
    def bands(self, f: int) -> Path:  # (band key, document) rows split by partition
        return self.work / "bands" / f"{file_key(f)}.npz"

    # 4. lsh: per partition
    def lsh(self, p: int) -> Path:  # decided edges, undecided pairs, candidate count
        return self.work / "lsh" / f"{part_key(p)}.npz"

    # 4b. shingles: per input file (only documents in undecided pairs)
    def shingle_ids(self, f: int) -> Path:
        return self.work / "shingles" / f"{file_key(f)}.ids.npy"

    def shingle_bounds(self, f: int) -> Path:
        return self.work / "shingles" / f"{file_key(f)}.bounds.npy"

    def shingle_hashes(self, f: int) -> Path:  # flat little-endian uint64 sets
        return self.work / "shingles" / f"{file_key(f)}.hashes.bin"

    # 4c. verify: per partition
    def verified(self, p: int) -> Path:  # every near-duplicate edge of the partition
        return self.work / "verify" / f"{part_key(p)}.npy"

    # 5. components: star rounds per node partition, then the keep rule per component
    def graph(self, step: str, p: int) -> Path:  # a round's edges (and labels) routed by partition
        return self.work / step / f"{part_key(p)}.npz"

    def kept_nodes(self, p: int) -> Path:  # sorted nodes of partition p's components ...
        return self.work / "keep" / f"{part_key(p)}.nodes.npy"

    def kept_of_nodes(self, p: int) -> Path:  # ... and the document each one's component keeps
        return self.work / "keep" / f"{part_key(p)}.kept.npy"

    def clusters(self, f: int) -> Path:  # per document of file f: kept dense id, duplicate kind
        return self.work / "clusters" / f"{file_key(f)}.npz"

    # 6. write: per input file
    def corpus(self) -> Path:  # the cleaned corpus, published as <output>/corpus
        return self.work / "write" / CORPUS

    def ledger_part(self, f: int) -> Path:
        return self.work / "write" / "ledger" / f"{file_key(f)}.parquet"

    def index(self) -> Path:  # the index of the kept documents, published as <output>/index
        return self.work / "write" / INDEX

    def index_part(self, f: int) -> Path:
        return self.index() / self.index_name(f)

    @staticmethod
    def index_name(f: int) -> str:
        return f"{file_key(f)}.npz"

    def timings(self) -> Path:
        return self.work / "timings.json"


def file_of(offsets: np.ndarray, dense: np.ndarray | int) -> np.ndarray | int:
    """The input file number of dense document ids."""
    return np.searchsorted(offsets, dense, side="right") - 1
