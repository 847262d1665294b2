"""Where every file of the dedup stage lives, in one place, and how arrays are stored.

Input files are numbered in sorted order (``f000003``), hash partitions too
(``p0007``). Documents get dense int64 ids in input order (files, then lines), which
is also the order of their string ids within each file; ``offsets[i]`` is the first
dense id of file i.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from common.atomic import atomic_path
from pipeline.kernel import file_key

# The stage's published outputs (names under <output>).
CORPUS, LEDGER, REPORT, QUARANTINE, INDEX = "corpus", "ledger.parquet", "report.json", "quarantine.jsonl", "index"
OUTPUTS = (CORPUS, LEDGER, REPORT, QUARANTINE, INDEX)


def part_key(p: int) -> str:
    return f"p{p:04d}"


# Storage requests this process made through these helpers, by kind: "open" (an object
# opened for reading: a HEAD on an object store), "read" (one whole or ranged GET) and
# "write" (one committed object). The step runner reports them per task.
REQUESTS: Counter = Counter()


def reset_requests() -> None:
    REQUESTS.clear()


def requests_made() -> dict[str, int]:
    return dict(REQUESTS)


@contextmanager
def open_write(path: Path) -> Iterator[BinaryIO]:
    """A binary writer whose file appears, whole, only when the block succeeds."""
    REQUESTS["write"] += 1
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        yield fh


class RangeReader:
    """Positioned reads of one file: each ``read_at`` is one storage request (a ranged GET)."""

    def __init__(self, path: Path):
        REQUESTS["open"] += 1
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)

    def read_at(self, nbytes: int, offset: int, exact: bool = True) -> bytes:
        REQUESTS["read"] += 1
        data = os.pread(self.fd, nbytes, offset)
        if exact and len(data) != nbytes:
            raise OSError(f"{self.path}: {len(data)} bytes at offset {offset}, expected {nbytes} (truncated file)")
        return data

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "RangeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_whole(path: Path) -> bytes:
    REQUESTS["open"] += 1
    REQUESTS["read"] += 1
    return Path(path).read_bytes()


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    if mmap:  # pages read on demand: counted as one read
        REQUESTS["open"] += 1
        REQUESTS["read"] += 1
        return np.load(path, mmap_mode="r", allow_pickle=False)
    return np.load(io.BytesIO(_read_whole(path)), allow_pickle=False)


def save_npy(path: Path, array: np.ndarray) -> None:
    with open_write(path) as fh:
        np.save(fh, array, allow_pickle=False)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open_write(path) as fh:
        np.savez(fh, **arrays)


class NpyRows:
    """Rows of a 2-D .npy file read with positioned reads, never memory-mapped: a task
    that gathers a few rows from many files holds those rows, not every page it touched
    (a mapped file's pages would stay in the task's resident memory)."""

    def __init__(self, path: Path):
        self.reader = RangeReader(path)
        head = io.BytesIO(self.reader.read_at(_NPY_HEAD_BYTES, 0, exact=False))
        version = np.lib.format.read_magic(head)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(head)
        self.offset = head.tell()
        if fortran or len(shape) != 2:
            raise ValueError(f"{path}: expected a C-ordered 2-D array, got shape {shape}")
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.row_bytes = shape[1] * self.dtype.itemsize

    def rows(self, index: np.ndarray, gap_bytes: int = 1 << 16) -> np.ndarray:
        """Rows ``index`` (any order), one read per run of wanted rows less than
        ``gap_bytes`` apart (reading a short gap costs less than another request)."""
        out = np.empty((len(index), self.shape[1]), dtype=self.dtype)
        order = np.argsort(index, kind="stable")
        wanted = index[order]
        breaks = np.flatnonzero(np.diff(wanted) > max(1, gap_bytes // self.row_bytes)) + 1
        for run in np.split(np.arange(len(wanted)), breaks):
            if len(run) == 0:
                continue
            first, count = int(wanted[run[0]]), int(wanted[run[-1]]) - int(wanted[run[0]]) + 1
            data = self.reader.read_at(count * self.row_bytes, self.offset + first * self.row_bytes)
            out[order[run]] = np.frombuffer(data, dtype=self.dtype).reshape(count, self.shape[1])[wanted[run] - first]
        return out

    def close(self) -> None:
        self.reader.close()


_NPY_HEAD_BYTES = 4096  # enough for the header of any 2-D array numpy writes


def load_npz(path: Path, name: str) -> np.ndarray:
    with np.load(io.BytesIO(_read_whole(path)), allow_pickle=False) as z:
        return z[name]


# Routed files: the exchange between steps (pipeline/dedup/exchange.py). One file holds
# rows for a run of destinations (partitions or files), sorted by destination, behind
# an index, so any destination's rows are one ranged read away:
#   magic (8 bytes) | destinations n (int64) | row bytes (int64) | offsets (n + 1 int64, in rows) | rows
ROUTED_MAGIC = b"DXROUTE1"
_ROUTED_HEAD = 24


def row_bytes(dtype: np.dtype) -> int:
    """Bytes of one row of ``dtype`` (a sub-array dtype such as ``("<i8", (2,))`` is one row)."""
    return np.dtype(dtype).itemsize


def save_routed(path: Path, rows: np.ndarray, dest: np.ndarray, destinations: int) -> None:
    """``rows`` routed to ``dest`` (one destination per row, 0 .. destinations - 1): each
    destination's rows in their original order."""
    order = np.argsort(dest, kind="stable")
    offsets = np.zeros(destinations + 1, dtype="<i8")
    np.cumsum(np.bincount(dest, minlength=destinations), out=offsets[1:])
    width = rows.dtype.itemsize * int(np.prod(rows.shape[1:], dtype=np.int64))
    write_routed(path, offsets, width, [np.ascontiguousarray(rows[order]).tobytes()])


def write_routed(path: Path, offsets: np.ndarray, width: int, chunks: Iterable[bytes | np.ndarray]) -> None:
    """A routed file from its index and its rows' bytes, streamed in destination order."""
    head = ROUTED_MAGIC + np.array([len(offsets) - 1, width], dtype="<i8").tobytes()
    with open_write(path) as fh:
        fh.write(head + np.asarray(offsets, dtype="<i8").tobytes())
        for chunk in chunks:
            fh.write(chunk)


class RoutedReader:
    """Ranged reads of a routed file of ``destinations`` destinations with rows of ``width`` bytes."""

    def __init__(self, path: Path, destinations: int, width: int):
        self.reader = RangeReader(path)
        self.destinations, self.width = destinations, width
        self.data = _ROUTED_HEAD + 8 * (destinations + 1)

    def offsets(self, first: int, last: int) -> np.ndarray:
        """Row offsets of destinations first .. last (``last - first + 1`` values), one read
        (with the header checked when it starts at the file's beginning)."""
        if first == 0:
            raw = self.reader.read_at(_ROUTED_HEAD + 8 * (last + 1), 0)
            n, width = np.frombuffer(raw[8:_ROUTED_HEAD], dtype="<i8")
            if raw[:8] != ROUTED_MAGIC or n != self.destinations or width != self.width:
                raise ValueError(f"{self.reader.path}: not a routed file of {self.destinations} destinations "
                                 f"x {self.width}-byte rows (header {raw[:8]!r}, {n}, {width})")
            return np.frombuffer(raw[_ROUTED_HEAD:], dtype="<i8")
        return np.frombuffer(self.reader.read_at(8 * (last - first + 1), _ROUTED_HEAD + 8 * first), dtype="<i8")

    def rows(self, start: int, stop: int) -> bytes:
        """The bytes of rows start .. stop - 1 (one read; none when empty)."""
        if stop <= start:
            return b""
        return self.reader.read_at((stop - start) * self.width, self.data + start * self.width)

    def close(self) -> None:
        self.reader.close()


def read_routed(path: Path, destinations: int, d: int, dtype: np.dtype) -> np.ndarray:
    """The rows routed to destination ``d`` of a routed file: at most three requests."""
    reader = RoutedReader(path, destinations, row_bytes(dtype))
    try:
        a, b = reader.offsets(d, d + 1)
        return np.frombuffer(reader.rows(int(a), int(b)), dtype=dtype).copy()
    finally:
        reader.close()


def load_routed(path: Path, dtype: np.dtype) -> np.ndarray:
    """Every row of a routed file, in destination order (one read)."""
    raw = _read_whole(path)
    n = int(np.frombuffer(raw[8:16], dtype="<i8")[0])
    if raw[:8] != ROUTED_MAGIC:
        raise ValueError(f"{path}: not a routed file")
    return np.frombuffer(raw[_ROUTED_HEAD + 8 * (n + 1):], dtype=dtype).copy()


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

    def hash_rows(self, f: int) -> Path:  # exact-hash rows routed by partition
        return self._prepared(f) / f"{file_key(f)}.hash.bin"

    def signatures(self, f: int) -> Path:  # MinHash signatures of the file's candidates
        return self._prepared(f) / f"{file_key(f)}.sig.npy"

    def signature_valid(self, f: int) -> Path:
        return self._prepared(f) / f"{file_key(f)}.sigvalid.npy"

    def signature_docs(self, f: int) -> Path:  # local document index of each signature row
        return self._prepared(f) / f"{file_key(f)}.siglocal.npy"

    # 2. exact: per partition
    def exact(self, p: int) -> Path:  # edges to each group's representative
        return self.work / "exact" / f"{part_key(p)}.npz"

    def nonrep(self, p: int) -> Path:  # non-representatives, routed by file
        return self.work / "exact" / f"{part_key(p)}.nonrep.bin"

    # 3. bands: per input file
    def bands(self, f: int) -> Path:  # (band key, document) rows routed by partition
        return self.work / "bands" / f"{file_key(f)}.bin"

    # 4. lsh: per partition
    def pairs(self, p: int) -> Path:  # candidate pairs
        return self.work / "lsh" / f"{part_key(p)}.pairs.npy"

    def wanted(self, p: int) -> Path:  # (document, p) of the candidate pairs, routed by file
        return self.work / "lsh" / f"{part_key(p)}.wanted.bin"

    # 4a. signatures: per file, the signatures partitions asked for, routed back to them
    def signature_rows(self, f: int) -> Path:
        return self.work / "signatures" / f"{file_key(f)}.bin"

    # 4b. estimate: per partition
    def decided(self, p: int) -> Path:  # decided edges, undecided pairs
        return self.work / "estimate" / f"{part_key(p)}.npz"

    def unsure(self, p: int) -> Path:  # (document, p) of the undecided pairs, routed by file
        return self.work / "estimate" / f"{part_key(p)}.unsure.bin"

    # 4c. shingles: per file, the shingle sets of the documents in undecided pairs, routed
    # to the partitions that asked (in parts of bounded size)
    def shingle_part(self, f: int, part: int) -> Path:  # the hashes of the sets
        return self.work / "shingles" / f"{file_key(f)}.{part:04d}.bin"

    def shingle_sets(self, f: int, part: int) -> Path:  # (document, set size) of each
        return self.work / "shingles" / f"{file_key(f)}.{part:04d}.sets.bin"

    # 4d. verify: per partition
    def verified(self, p: int) -> Path:  # every near-duplicate edge of the partition
        return self.work / "verify" / f"{part_key(p)}.npy"

    # 5. components: star rounds per node partition, then the keep rule per component
    def graph(self, step: str, p: int) -> Path:  # a round's edges (and labels) routed by partition
        return self.work / step / f"{part_key(p)}.bin"

    def ranked(self, f: int) -> Path:  # (node, component, rank) of file f's labelled nodes, routed by component
        return self.work / "ranks" / f"{file_key(f)}.bin"

    def kept(self, p: int) -> Path:  # (node, kept document) of partition p's components, routed by file
        return self.work / "keep" / f"{part_key(p)}.bin"

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

    # an exchange's merge steps: one file per group
    def merged(self, step: str, g: int) -> Path:
        return self.work / step / f"g{g:05d}.bin"

    def timings(self) -> Path:
        return self.work / "timings.json"


def file_of(offsets: np.ndarray, dense: np.ndarray | int) -> np.ndarray | int:
    """The input file number of dense document ids."""
    return np.searchsorted(offsets, dense, side="right") - 1
