"""Retrying storage operations: what the storage seam (common.storage) does about transient errors.

Timeouts, 5xx answers, throttling and connection resets surface from pyarrow as ``OSError``;
a whole operation is tried again with doubling waits, and a stream that dies mid-body is
re-opened at the byte it reached. A missing object (``FileNotFoundError``) and permission
errors are not transient and raise at once.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")
ATTEMPTS = 6  # of one whole operation (each request also has pyarrow's own retries)
BACKOFF_S = 0.05  # first wait; doubled per attempt
# Bytes one GET of a streamed object fetches: pyarrow's object stream sends a ranged GET per
# read() otherwise, and readers such as a zstd decoder read a few hundred KB at a time.
STREAM_BUFFER = 8 << 20


class InputReadError(OSError):
    """A file could not be read after retries (storage, not content)."""


def transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, IsADirectoryError,
                                                             NotADirectoryError, PermissionError))


def retried(fn: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """``fn()``, again after a transient ``OSError`` (with doubling waits) up to ``attempts`` times."""
    for attempt in range(attempts):
        try:
            return fn()
        except OSError as exc:
            if not transient(exc) or attempt == attempts - 1:
                raise
            time.sleep(BACKOFF_S * (2**attempt))
    raise AssertionError("unreachable")


class ResumingReader:
    """Streaming reads of an object; a failed read re-opens the object at the offset reached."""

    def __init__(self, loc: Any):  # a Location of common.storage
        self.loc = loc
        self.offset = 0
        # compression=None: the object's bytes as stored (pyarrow would decompress a .zst name)
        self._fh = retried(lambda: loc.fs.open_input_stream(loc.path, compression=None, buffer_size=STREAM_BUFFER))

    def read(self, size: int = -1) -> bytes:
        for attempt in range(ATTEMPTS):
            try:
                data = self._fh.read() if size is None or size < 0 else self._fh.read(size)
                self.offset += len(data)
                return data
            except OSError as exc:
                if not transient(exc) or attempt == ATTEMPTS - 1:
                    raise InputReadError(f"{self.loc}: read error at byte {self.offset}: {exc}") from exc
                time.sleep(BACKOFF_S * (2**attempt))
                self._reopen()
        raise AssertionError("unreachable")

    def _reopen(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass
        import pyarrow as pa

        fh = retried(lambda: self.loc.fs.open_input_file(self.loc.path))
        fh.seek(self.offset)
        self._fh = pa.BufferedInputStream(fh, STREAM_BUFFER)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fh.close()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def __enter__(self) -> "ResumingReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
