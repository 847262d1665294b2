"""Where every file of the dedup stage lives, in one place, and how arrays are stored.

Input files are numbered in sorted order (``f000003``), hash partitions too
(``p0007``). Documents get dense int64 ids in input order (files, then lines), which
is also the order of their string ids within each file; ``offsets[i]`` is the first
dense id of file i.

Every path here is a ``Location`` of the storage seam (common.storage): the work folder
may be on a local disk or an object store. The helpers below are the only way the
steps' bytes reach storage: a local file is read, mapped and written as it always was
(same bytes, same temporary names); an object is read whole or by ranged reads and
written whole.
"""

from __future__ import annotations

import io
import os
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import pyarrow.parquet as pq

from common.storage import Location, location, spooled
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
_COUNTING = threading.Lock()  # a task may read several pieces at a time


def _count(kind: str) -> None:
    with _COUNTING:
        REQUESTS[kind] += 1


def reset_requests() -> None:
    REQUESTS.clear()


def requests_made() -> dict[str, int]:
    return dict(REQUESTS)


@contextmanager
def open_write(path: Path | Location) -> Iterator[BinaryIO]:
    """A binary writer whose file appears, whole, only when the block succeeds."""
    _count("write")
    with location(path).open_write() as fh:
        yield fh


@contextmanager
def local_output(path: Path | Location) -> Iterator[Path]:
    """A local file to write that becomes ``path`` whole when the block ends cleanly (for
    writers that need a file name: parquet writers, streamed binary files)."""
    _count("write")
    with spooled(location(path)) as local:
        yield local


class RangeReader:
    """Positioned reads of one file: each ``read_at`` is one storage request (``os.pread`` on
    a local file, one ranged GET of an object)."""

    def __init__(self, path: Path | Location):
        self.path = location(path)
        self.fd, self.file = None, None  # opened by the first read (in whichever thread reads first)

    def _open(self) -> None:
        _count("open")
        if self.path.is_local:
            self.fd = os.open(self.path.local_path, os.O_RDONLY)
        else:
            self.file = self.path.open_random()

    def read_at(self, nbytes: int, offset: int, exact: bool = True) -> bytes:
        if self.fd is None and self.file is None:
            self._open()
        _count("read")
        if self.file is None:
            data = os.pread(self.fd, nbytes, offset)
        else:
            data = self.file.read_at(nbytes, offset)  # one ranged GET
        if exact and len(data) != nbytes:
            raise OSError(f"{self.path}: {len(data)} bytes at offset {offset}, expected {nbytes} (truncated file)")
        return data

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        if self.file is not None:
            self.file.close()
        self.fd, self.file = None, None

    def __enter__(self) -> "RangeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_whole(path: Path | Location) -> bytes:
    """A file's bytes in one read."""
    _count("open")
    _count("read")
    return location(path).read_bytes()


def load_npy(path: Path | Location, mmap: bool = False) -> np.ndarray:
    loc = location(path)
    if mmap and loc.is_local:  # pages read on demand: counted as one read
        _count("open")
        _count("read")
        return np.load(loc.local_path, mmap_mode="r", allow_pickle=False)
    return np.load(io.BytesIO(read_whole(loc)), allow_pickle=False)


def save_npy(path: Path | Location, array: np.ndarray) -> None:
    with open_write(path) as fh:
        np.save(fh, array, allow_pickle=False)


def save_npz(path: Path | Location, **arrays: np.ndarray) -> None:
    with open_write(path) as fh:
        np.savez(fh, **arrays)


def open_npz(path: Path | Location) -> np.lib.npyio.NpzFile:
    """An .npz archive (a context manager) to read several arrays of (one read)."""
    return np.load(io.BytesIO(read_whole(path)), allow_pickle=False)


def load_npz(path: Path | Location, name: str) -> np.ndarray:
    with open_npz(path) as z:
        return z[name]


def open_table(path: Path | Location) -> pq.ParquetFile:
    """A parquet file to read in batches (positioned reads on an object store)."""
    _count("open")
    loc = location(path)
    return pq.ParquetFile(str(loc.local_path) if loc.is_local else loc.open_random())


def read_table(path: Path | Location, columns: list[str] | None = None):
    """A whole parquet file as a table."""
    loc = location(path)
    if loc.is_local:
        return pq.read_table(str(loc.local_path), columns=columns)
    return open_table(loc).read(columns=columns)


class NpyRows:
    """Rows of a 2-D .npy file read with positioned reads, never memory-mapped: a task
    that gathers a few rows from many files holds those rows, not every page it touched
    (a mapped file's pages would stay in the task's resident memory)."""

    def __init__(self, path: Path | Location):
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


@dataclass(frozen=True)
class Layout:
    work: Location  # <output>/_work
    reference_files: int = 0  # files 0 .. reference_files - 1 come from a reference index

    def _prepared(self, f: int) -> Location:  # what prepare writes, or the reference step for its files
        return self.work / ("reference" if f < self.reference_files else "prepare")

    # 1. prepare: per input file
    def table(self, f: int) -> Location:  # the document table (parquet)
        return self._prepared(f) / f"{file_key(f)}.parquet"

    def meta(self, f: int) -> Location:  # status, keep rank and line of every document (npz)
        return self._prepared(f) / f"{file_key(f)}.meta.npz"

    def hash_rows(self, f: int) -> Location:  # exact-hash rows routed by partition
        return self._prepared(f) / f"{file_key(f)}.hash.bin"

    def signatures(self, f: int) -> Location:  # MinHash signatures of the file's candidates
        return self._prepared(f) / f"{file_key(f)}.sig.npy"

    def signature_valid(self, f: int) -> Location:
        return self._prepared(f) / f"{file_key(f)}.sigvalid.npy"

    def signature_docs(self, f: int) -> Location:  # local document index of each signature row
        return self._prepared(f) / f"{file_key(f)}.siglocal.npy"

    # 2. exact: per partition
    def exact(self, p: int) -> Location:  # edges to each group's representative
        return self.work / "exact" / f"{part_key(p)}.npz"

    def nonrep(self, p: int) -> Location:  # non-representatives, routed by file
        return self.work / "exact" / f"{part_key(p)}.nonrep.bin"

    # 3. bands: per input file
    def bands(self, f: int) -> Location:  # (band key, document) rows routed by partition
        return self.work / "bands" / f"{file_key(f)}.bin"

    # 4. lsh: per partition
    def pairs(self, p: int) -> Location:  # candidate pairs
        return self.work / "lsh" / f"{part_key(p)}.pairs.npy"

    def wanted(self, p: int) -> Location:  # (document, p) of the candidate pairs, routed by file
        return self.work / "lsh" / f"{part_key(p)}.wanted.bin"

    # 4a. signatures: per file, the signatures partitions asked for, routed back to them
    def signature_rows(self, f: int) -> Location:
        return self.work / "signatures" / f"{file_key(f)}.bin"

    # 4b. estimate: per partition
    def decided(self, p: int) -> Location:  # decided edges, undecided pairs
        return self.work / "estimate" / f"{part_key(p)}.npz"

    def unsure(self, p: int) -> Location:  # (document, p) of the undecided pairs, routed by file
        return self.work / "estimate" / f"{part_key(p)}.unsure.bin"

    # 4c. shingles: per file, the shingle sets of the documents in undecided pairs, routed
    # to the partitions that asked (in parts of bounded size)
    def shingle_part(self, f: int, part: int) -> Location:  # the hashes of the sets
        return self.work / "shingles" / f"{file_key(f)}.{part:04d}.bin"

    def shingle_sets(self, f: int, part: int) -> Location:  # (document, set size) of each
        return self.work / "shingles" / f"{file_key(f)}.{part:04d}.sets.bin"

    # 4d. verify: per partition
    def verified(self, p: int) -> Location:  # every near-duplicate edge of the partition
        return self.work / "verify" / f"{part_key(p)}.npy"

    # 5. components: star rounds per node partition, then the keep rule per component
    def graph(self, step: str, p: int) -> Location:  # a round's edges (and labels) routed by partition
        return self.work / step / f"{part_key(p)}.bin"

    def ranked(self, f: int) -> Location:  # (node, component, rank) of file f's labelled nodes, routed by component
        return self.work / "ranks" / f"{file_key(f)}.bin"

    def kept(self, p: int) -> Location:  # (node, kept document) of partition p's components, routed by file
        return self.work / "keep" / f"{part_key(p)}.bin"

    def clusters(self, f: int) -> Location:  # per document of file f: kept dense id, duplicate kind
        return self.work / "clusters" / f"{file_key(f)}.npz"

    def name_requests(self, f: int) -> Location:  # (kept document, f) for f's duplicates, routed by file
        return self.work / "clusters" / f"{file_key(f)}.asks.bin"

    # 6a. names: per file, the names of its documents other files asked for, routed to them
    def names(self, f: int) -> Location:
        return self.work / "names" / f"{file_key(f)}.bin"

    # 6. write: per input file
    def corpus(self) -> Location:  # the cleaned corpus, published as <output>/corpus
        return self.work / "write" / CORPUS

    def ledger_part(self, f: int) -> Location:
        return self.work / "write" / "ledger" / f"{file_key(f)}.parquet"

    def index(self) -> Location:  # the index of the kept documents, published as <output>/index
        return self.work / "write" / INDEX

    def index_part(self, f: int) -> Location:
        return self.index() / self.index_name(f)

    @staticmethod
    def index_name(f: int) -> str:
        return f"{file_key(f)}.npz"

    # an exchange's merge steps: one file per group
    def merged(self, step: str, g: int) -> Location:
        return self.work / step / f"g{g:05d}.bin"

    def timings(self) -> Location:
        return self.work / "timings.json"


def file_of(offsets: np.ndarray, dense: np.ndarray | int) -> np.ndarray | int:
    """The input file number of dense document ids."""
    return np.searchsorted(offsets, dense, side="right") - 1
