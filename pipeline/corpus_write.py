"""Writing corpus files: cleaned chunks in SlimPajama's layout and the quarantine of
rejected input (what reading, in corpus_io.py, turns bad records into). Chunks go to a
local folder or an object-store prefix (common.storage), each committed whole."""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from common.storage import Location, location, spooled
from pipeline.corpus_io import Rejected

# --- Quarantine -------------------------------------------------------------------


class Quarantine:
    """Append-only JSONL of rejected input, with counts per (source, reason)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", encoding="utf-8")
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, item: Rejected) -> None:
        self._fh.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
        key = (item.source, reason_kind(item.reason))
        self.counts[key] = self.counts.get(key, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "Quarantine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reason_kind(reason: str) -> str:
    """The reason without record-specific details (for counting)."""
    for sep in (" at ", " after ", ":"):
        reason = reason.split(sep)[0]
    return reason


# --- Writing ----------------------------------------------------------------------


@dataclass
class ChunkWriter:
    """Write records as ``<prefix>-00000.jsonl.zst`` chunks of at most ``max_bytes``.

    ``max_bytes`` bounds the uncompressed JSONL bytes of a chunk (a single record larger
    than the limit gets a chunk of its own). Each chunk is committed whole (renamed from a
    temporary name on a local disk, uploaded complete to an object store), so a crash
    never leaves a partial chunk behind a final name. ``files``: the chunks written
    (Paths on a local disk, Locations otherwise).
    """

    out_dir: Path | Location
    prefix: str = "chunk"
    max_bytes: int = 64 << 20
    level: int = 3
    files: list[Path | Location] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._out = location(self.out_dir)
        if self._out.is_local:
            self._out.local_path.mkdir(parents=True, exist_ok=True)
        self._commit: ExitStack | None = None
        self._fh: Any = None
        self._writer: Any = None
        self._bytes = 0
        self.records = 0

    def write(self, record: dict[str, Any]) -> tuple[int, int]:
        """Append a record; returns where it went: (chunk number, line in the chunk, from 1)."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        if self._writer is not None and self._bytes + len(line) > self.max_bytes:
            self._finish_chunk()
        if self._writer is None:
            self._start_chunk()
        self._writer.write(line)
        self._bytes += len(line)
        self._lines += 1
        self.records += 1
        return len(self.files), self._lines

    def _chunk_path(self) -> Location:
        return self._out / f"{self.prefix}-{len(self.files):05d}.jsonl.zst"

    def _start_chunk(self) -> None:
        self._commit = ExitStack()
        local = self._commit.enter_context(spooled(self._chunk_path()))  # its temporary name, or a local spool
        self._fh = self._commit.enter_context(open(local, "wb"))
        self._writer = zstandard.ZstdCompressor(level=self.level).stream_writer(self._fh, closefd=False)
        self._bytes = 0
        self._lines = 0

    def _finish_chunk(self) -> None:
        assert self._writer is not None and self._commit is not None
        self._writer.close()  # ends the zstd frame
        final = self._chunk_path()
        self._commit.close()  # closes the file, then renames or uploads it
        self.files.append(final.local_path or final)
        self._writer = self._fh = self._commit = None

    def close(self) -> list[Path]:
        if self._writer is not None:
            self._finish_chunk()
        return list(self.files)

    def __enter__(self) -> "ChunkWriter":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:  # failed mid-chunk: leave no partial file behind
            self._writer.close()
            self._commit.__exit__(exc_type, *rest)  # type: ignore[union-attr,arg-type]
            self._writer = self._fh = self._commit = None
