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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq

from common.storage import Location, location, retried, spooled
from pipeline.kernel import file_key

# The stage's published outputs (names under <output>).
CORPUS, LEDGER, REPORT, QUARANTINE, INDEX = "corpus", "ledger.parquet", "report.json", "quarantine.jsonl", "index"
OUTPUTS = (CORPUS, LEDGER, REPORT, QUARANTINE, INDEX)


def part_key(p: int) -> str:
    return f"p{p:04d}"


def _source(path: Path | Location) -> Path | io.BytesIO:
    """What numpy reads: the local file itself, or an object's bytes (one whole read)."""
    loc = location(path)
    return loc.local_path if loc.is_local else io.BytesIO(loc.read_bytes())


def load_npy(path: Path | Location, mmap: bool = False) -> np.ndarray:
    source = _source(path)
    return np.load(source, mmap_mode="r" if mmap and isinstance(source, Path) else None, allow_pickle=False)


def save_npy(path: Path | Location, array: np.ndarray) -> None:
    with location(path).open_write() as fh:
        np.save(fh, array, allow_pickle=False)


def save_npz(path: Path | Location, **arrays: np.ndarray) -> None:
    with location(path).open_write() as fh:
        np.savez(fh, **arrays)


def open_npz(path: Path | Location) -> np.lib.npyio.NpzFile:
    """An .npz archive (a context manager) to read several arrays of."""
    return np.load(_source(path), allow_pickle=False)


def open_table(path: Path | Location) -> pq.ParquetFile:
    """A parquet file to read in batches (positioned reads on an object store)."""
    loc = location(path)
    return pq.ParquetFile(str(loc.local_path) if loc.is_local else loc.open_random())


@contextmanager
def local_output(path: Path | Location) -> Iterator[Path]:
    """A local file to write that becomes ``path`` whole when the block ends cleanly (for
    writers that need a file name: parquet writers, streamed binary files)."""
    with spooled(location(path)) as local:
        yield local


class Positioned:
    """Positioned reads of one file: ``os.pread`` locally, retried ranged reads on an object store."""

    def __init__(self, path: Path | Location):
        self.loc = location(path)
        if self.loc.is_local:
            self.fd, self.reader = os.open(self.loc.local_path, os.O_RDONLY), None
        else:
            self.fd, self.reader = -1, self.loc.open_random()

    def read(self, nbytes: int, offset: int) -> bytes:
        if self.reader is None:
            return os.pread(self.fd, nbytes, offset)
        return retried(lambda: self.reader.read_at(nbytes, offset)) if nbytes else b""

    def close(self) -> None:
        if self.reader is None:
            os.close(self.fd)
        else:
            self.reader.close()


class NpyRows:
    """Rows of a 2-D .npy file read with positioned reads, never memory-mapped: a task
    that gathers a few rows from many files holds those rows, not every page it touched
    (a mapped file's pages would stay in the task's resident memory)."""

    def __init__(self, path: Path | Location):
        self.file = Positioned(path)
        head = io.BytesIO(self.file.read(4096, 0))  # magic and header: well under 4 KiB
        version = np.lib.format.read_magic(head)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(head)
        self.offset = head.tell()
        if fortran or len(shape) != 2:
            raise ValueError(f"{path}: expected a C-ordered 2-D array, got shape {shape}")
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.row_bytes = shape[1] * self.dtype.itemsize

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
            data = self.file.read(count * self.row_bytes, self.offset + first * self.row_bytes)
            out[order[run]] = np.frombuffer(data, dtype=self.dtype).reshape(count, self.shape[1])
        return out

    def close(self) -> None:
        self.file.close()


def load_npz(path: Path | Location, name: str) -> np.ndarray:
    with open_npz(path) as z:
        return z[name]


def read_table(path: Path | Location, columns: list[str] | None = None):
    """A whole parquet file as a table."""
    loc = location(path)
    if loc.is_local:
        return pq.read_table(str(loc.local_path), columns=columns)
    return open_table(loc).read(columns=columns)


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

    def hash_rows(self, f: int) -> Location:  # exact-hash rows split by partition (npz)
        return self._prepared(f) / f"{file_key(f)}.hash.npz"

    def signatures(self, f: int) -> Location:  # MinHash signatures of the file's candidates
        return self._prepared(f) / f"{file_key(f)}.sig.npy"

    def signature_valid(self, f: int) -> Location:
        return self._prepared(f) / f"{file_key(f)}.sigvalid.npy"

    def signature_docs(self, f: int) -> Location:  # local document index of each signature row
        return self._prepared(f) / f"{file_key(f)}.siglocal.npy"

    # 2. exact: per partition
    def exact(self, p: int) -> Location:  # edges to each group's representative, non-representatives
        return self.work / "exact" / f"{part_key(p)}.npz"

    # 3. bands: per input file
    def bands(self, f: int) -> Location:  # (band key, document) rows split by partition
        return self.work / "bands" / f"{file_key(f)}.npz"

    # 4. lsh: per partition
    def lsh(self, p: int) -> Location:  # decided edges, undecided pairs, candidate count
        return self.work / "lsh" / f"{part_key(p)}.npz"

    # 4b. shingles: per input file (only documents in undecided pairs)
    def shingle_ids(self, f: int) -> Location:
        return self.work / "shingles" / f"{file_key(f)}.ids.npy"

    def shingle_bounds(self, f: int) -> Location:
        return self.work / "shingles" / f"{file_key(f)}.bounds.npy"

    def shingle_hashes(self, f: int) -> Location:  # flat little-endian uint64 sets
        return self.work / "shingles" / f"{file_key(f)}.hashes.bin"

    # 4c. verify: per partition
    def verified(self, p: int) -> Location:  # every near-duplicate edge of the partition
        return self.work / "verify" / f"{part_key(p)}.npy"

    # 5. components: star rounds per node partition, then the keep rule per component
    def graph(self, step: str, p: int) -> Location:  # a round's edges (and labels) routed by partition
        return self.work / step / f"{part_key(p)}.npz"

    def kept_nodes(self, p: int) -> Location:  # sorted nodes of partition p's components ...
        return self.work / "keep" / f"{part_key(p)}.nodes.npy"

    def kept_of_nodes(self, p: int) -> Location:  # ... and the document each one's component keeps
        return self.work / "keep" / f"{part_key(p)}.kept.npy"

    def clusters(self, f: int) -> Location:  # per document of file f: kept dense id, duplicate kind
        return self.work / "clusters" / f"{file_key(f)}.npz"

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

    def timings(self) -> Location:
        return self.work / "timings.json"


def file_of(offsets: np.ndarray, dense: np.ndarray | int) -> np.ndarray | int:
    """The input file number of dense document ids."""
    return np.searchsorted(offsets, dense, side="right") - 1
