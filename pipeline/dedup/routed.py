"""Routed files: the exchange between steps (pipeline/dedup/exchange.py).

One file holds rows for a run of destinations (partitions or files), sorted by
destination, behind an index, so any destination's rows are one ranged read away.
Its bytes reach storage through the helpers of pipeline.dedup.layout (the storage seam).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from common.storage import Location
from pipeline.dedup.layout import RangeReader, open_write, read_whole

# The format:
#   magic (8 bytes) | destinations n (int64) | row bytes (int64) | offsets (n + 1 int64, in rows) | rows
ROUTED_MAGIC = b"DXROUTE1"
_ROUTED_HEAD = 24


def row_bytes(dtype: np.dtype) -> int:
    """Bytes of one row of ``dtype`` (a sub-array dtype such as ``("<i8", (2,))`` is one row)."""
    return np.dtype(dtype).itemsize


def save_routed(path: Location, rows: np.ndarray, dest: np.ndarray, destinations: int) -> None:
    """``rows`` routed to ``dest`` (one destination per row, 0 .. destinations - 1): each
    destination's rows in their original order."""
    order = np.argsort(dest, kind="stable")
    offsets = np.zeros(destinations + 1, dtype="<i8")
    np.cumsum(np.bincount(dest, minlength=destinations), out=offsets[1:])
    width = rows.dtype.itemsize * int(np.prod(rows.shape[1:], dtype=np.int64))
    write_routed(path, offsets, width, [np.ascontiguousarray(rows[order]).tobytes()])


def write_routed(path: Location, offsets: np.ndarray, width: int, chunks: Iterable[bytes | np.ndarray]) -> None:
    """A routed file from its index and its rows' bytes, streamed in destination order."""
    head = ROUTED_MAGIC + np.array([len(offsets) - 1, width], dtype="<i8").tobytes()
    with open_write(path) as fh:
        fh.write(head + np.asarray(offsets, dtype="<i8").tobytes())
        for chunk in chunks:
            fh.write(chunk)


class RoutedReader:
    """Ranged reads of a routed file of ``destinations`` destinations with rows of ``width`` bytes."""

    def __init__(self, path: Location, destinations: int, width: int):
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


def read_routed(path: Location, destinations: int, d: int, dtype: np.dtype, writable: bool = True) -> np.ndarray:
    """The rows routed to destination ``d`` of a routed file: at most three requests.
    ``writable=False``: a read-only view of the bytes read, for a large piece only read
    (no second copy of it in memory)."""
    reader = RoutedReader(path, destinations, row_bytes(dtype))
    try:
        a, b = reader.offsets(d, d + 1)
        rows = np.frombuffer(reader.rows(int(a), int(b)), dtype=dtype)
        return rows.copy() if writable else rows
    finally:
        reader.close()


def load_routed(path: Location, dtype: np.dtype) -> np.ndarray:
    """Every row of a routed file, in destination order (one read)."""
    raw = read_whole(path)
    n = int(np.frombuffer(raw[8:16], dtype="<i8")[0])
    if raw[:8] != ROUTED_MAGIC:
        raise ValueError(f"{path}: not a routed file")
    return np.frombuffer(raw[_ROUTED_HEAD + 8 * (n + 1):], dtype=dtype).copy()
