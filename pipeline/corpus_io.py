"""Streaming corpus I/O in SlimPajama's layout.

A corpus root holds one sub-folder per source (or per chunk, as SlimPajama ships it);
each folder holds ``.jsonl``, ``.jsonl.zst`` or ``.parquet`` files of records shaped
``{"text": str, "meta": {"redpajama_set_name": str, ...}}``. Files lying directly in the
root belong to a folder named after the root itself.

Reading is streaming (memory does not grow with corpus size) and never stops on bad
input: each bad record (or the undecodable rest of a file) comes out as a ``Rejected``
item with file, line and reason, in order with the good ``Document`` items around it.
A file that vanished after it was listed (or is a dangling link) is rejected whole.
An I/O error is not bad input: it raises ``InputReadError`` (an ``OSError``), so the
stage kernel retries the task, and a file that keeps failing stops the job naming it,
instead of the rest of the file being counted as one rejection.

The root may be a local folder or an object-store URL (``s3://bucket/corpus``): files
are listed and read through the storage seam (common.storage), which retries transient
storage errors and resumes a stream that died mid-body at the offset reached.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Union

import zstandard

from common.storage import InputReadError, Location, StorageConfig, location, retried

FORMATS = {".jsonl": "jsonl", ".jsonl.zst": "jsonl.zst", ".parquet": "parquet"}
RAW_PREVIEW_CHARS = 1000  # how much of a bad record the quarantine keeps
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    folder: str  # sub-folder of the corpus root this file belongs to
    name: str  # path relative to that folder, POSIX separators
    path: Path | Location  # a Path on a local disk, the object's Location on an object store
    format: str  # "jsonl" | "jsonl.zst" | "parquet"

    @property
    def label(self) -> str:
        """``<folder>/<name>``: the prefix of every document id in this file."""
        return f"{self.folder}/{self.name}"


@dataclass
class Document:
    id: str  # "<folder>/<file name>:<line from 1>" (row number from 1 for parquet)
    source: str  # meta.redpajama_set_name when present, else the folder name
    folder: str
    text: str
    record: dict[str, Any]  # the full record as read (text, meta and any other keys)

    @property
    def nbytes(self) -> int:
        return len(self.text.encode("utf-8"))


@dataclass
class Rejected:
    id: str
    source: str
    file: str  # "<folder>/<file name>"
    line: int  # 0 when the reason concerns the whole file
    reason: str
    raw: str = ""  # first RAW_PREVIEW_CHARS of the offending bytes, decoded leniently
    nbytes: int = 0  # size of the offending record in bytes (what the ledger counts)


Item = Union[Document, Rejected]


def file_format(path: Path | Location) -> str | None:
    name = path.name
    for suffix, fmt in sorted(FORMATS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    return None


def list_source_files(root: str | Path | Location, storage: StorageConfig | None = None) -> list[SourceFile]:
    """Every readable corpus file under ``root`` (a folder or an object-store prefix), sorted
    by (folder, name); names starting with "." or "_" are skipped at every level below the root."""
    if not location(root).is_local:
        return _list_remote(location(root, storage))
    root = location(root).local_path
    if not root.is_dir():
        raise FileNotFoundError(f"corpus root {root} is not a directory")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            fmt = file_format(path)
            if fmt is None:
                continue
            rel = path.relative_to(root)
            if len(rel.parts) == 1:
                folder, name = root.resolve().name, rel.as_posix()
            else:
                folder, name = rel.parts[0], Path(*rel.parts[1:]).as_posix()
            files.append(SourceFile(folder, name, path, fmt))
    files.sort(key=lambda f: (f.folder, f.name))
    return files


def _list_remote(root: Location) -> list[SourceFile]:
    if not root.is_dir():
        raise FileNotFoundError(f"corpus root {root} is not a directory (no objects under it)")
    files = []
    for loc in root.list_files(recursive=True):
        parts = loc.relative_to(root).split("/")
        fmt = file_format(loc)
        if fmt is None or any(p.startswith((".", "_")) for p in parts[:-1]):
            continue
        folder, name = (root.name, parts[0]) if len(parts) == 1 else (parts[0], "/".join(parts[1:]))
        files.append(SourceFile(folder, name, loc, fmt))
    files.sort(key=lambda f: (f.folder, f.name))
    return files


def read_corpus(root: str | Path) -> Iterator[Item]:
    for source_file in list_source_files(root):
        yield from iter_file(source_file)


def iter_file(sf: SourceFile) -> Iterator[Item]:
    """Documents and rejections of one file, in file order."""
    try:
        size = location(sf.path).info().size
    except FileNotFoundError as exc:
        yield _missing(sf, exc)
        return
    except OSError as exc:
        raise InputReadError(f"{sf.label}: cannot read file: {exc}") from exc
    if size == 0:
        yield _reject(sf, 0, "empty file")
        return
    if sf.format == "parquet":
        yield from _iter_parquet(sf)
    else:
        yield from _iter_jsonl(sf)


# --- JSONL ------------------------------------------------------------------------


def _iter_jsonl(sf: SourceFile) -> Iterator[Item]:
    line_no = 0
    seen_record = False
    try:
        chunks = _zstd_chunks(sf.path) if sf.format == "jsonl.zst" else _plain_chunks(sf.path)
        for line_no, raw in _split_lines(chunks):
            if not raw.strip():
                continue  # blank lines are not records
            seen_record = True
            yield _parse_json_line(sf, line_no, raw)
    except _TruncatedStream as exc:
        seen_record = True
        yield _reject(sf, line_no + 1, f"truncated or corrupt zstd stream after line {line_no}: {exc}", exc.tail)
    except FileNotFoundError as exc:
        if seen_record:
            raise InputReadError(f"{sf.label}: file vanished after line {line_no}: {exc}") from exc
        yield _missing(sf, exc)
        return
    except OSError as exc:
        raise InputReadError(f"{sf.label}: read error after line {line_no}: {exc}") from exc
    if not seen_record:
        yield _reject(sf, 0, "empty file (no records)")


class _TruncatedStream(Exception):
    def __init__(self, message: str, tail: bytes = b""):
        super().__init__(message)
        self.tail = tail


def _plain_chunks(path: Path | Location) -> Iterator[bytes]:
    with location(path).open_read() as fh:
        while chunk := fh.read(_READ_CHUNK):
            yield chunk


def _zstd_chunks(path: Path | Location) -> Iterator[bytes]:
    """Decompress every frame of a .zst file; raise _TruncatedStream if it ends mid-frame.

    zstandard's stream_reader returns silently at a truncated end, so frames are
    driven by hand to notice the cut and quarantine the rest of the file.
    """
    dctx = zstandard.ZstdDecompressor()
    with location(path).open_read() as fh:
        dobj = dctx.decompressobj()
        pending = b""
        frame_open = False
        while True:
            data = pending or fh.read(_READ_CHUNK)
            pending = b""
            if not data:
                break
            try:
                out = dobj.decompress(data)
            except zstandard.ZstdError as exc:
                raise _TruncatedStream(f"zstd error: {exc}") from None
            if out:
                yield out
            if dobj.eof:  # frame finished: start a new one on what is left
                pending = dobj.unused_data
                dobj = dctx.decompressobj()
                frame_open = False
            else:
                frame_open = True
        if frame_open:
            raise _TruncatedStream("stream ends inside a zstd frame")


def _split_lines(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line bytes without newline) across chunk borders."""
    line_no = 0
    carry = b""
    try:
        for chunk in chunks:
            buf = carry + chunk if carry else chunk
            lines = buf.split(b"\n")
            carry = lines.pop()
            for line in lines:
                line_no += 1
                yield line_no, line
    except _TruncatedStream as exc:
        exc.tail = carry[:RAW_PREVIEW_CHARS]
        raise
    if carry:
        yield line_no + 1, carry


def _parse_json_line(sf: SourceFile, line_no: int, raw: bytes) -> Item:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _reject(sf, line_no, f"invalid UTF-8 at byte {exc.start}", raw)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return _reject(sf, line_no, f"invalid JSON: {exc.msg} (column {exc.colno})", raw)
    return _to_document(sf, line_no, record, raw)


def _to_document(sf: SourceFile, line_no: int, record: Any, raw: bytes | str = b"") -> Item:
    if not isinstance(record, dict):
        return _reject(sf, line_no, f"record is a JSON {type(record).__name__}, not an object", raw)
    meta = record.get("meta")
    source = sf.folder
    if isinstance(meta, dict) and isinstance(meta.get("redpajama_set_name"), str):
        source = meta["redpajama_set_name"]
    if "text" not in record:
        return _reject(sf, line_no, "missing 'text' field", raw, source)
    text = record["text"]
    if not isinstance(text, str):
        return _reject(sf, line_no, f"'text' is {type(text).__name__}, not a string", raw, source)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON escapes such as "\ud800"
        return _reject(sf, line_no, "'text' contains unpaired surrogates (not valid Unicode)", raw, source)
    return Document(f"{sf.label}:{line_no}", source, sf.folder, text, record)


def _missing(sf: SourceFile, exc: OSError) -> Rejected:
    return _reject(sf, 0, f"missing file (vanished since it was listed, or a dangling link): {exc.strerror}")


def _reject(
    sf: SourceFile, line_no: int, reason: str, raw: bytes | str = b"", source: str | None = None
) -> Rejected:
    if isinstance(raw, bytes):
        nbytes = len(raw)
        preview = raw[:RAW_PREVIEW_CHARS].decode("utf-8", errors="replace")
    else:
        nbytes = len(raw.encode("utf-8", errors="replace"))
        preview = raw[:RAW_PREVIEW_CHARS]
    return Rejected(
        id=f"{sf.label}:{line_no}",
        source=source or sf.folder,
        file=sf.label,
        line=line_no,
        reason=reason,
        raw=preview,
        nbytes=nbytes,
    )


# --- Parquet ----------------------------------------------------------------------


class _TrackedFile(io.FileIO):
    """A file that remembers its own read errors: pyarrow reports corrupt content and
    failed reads alike (often as OSError), so this tells storage faults from bad bytes."""

    read_error: OSError | None = None

    def readinto(self, buffer):
        try:
            return super().readinto(buffer)
        except OSError as exc:
            self.read_error = exc
            raise

    def read(self, size=-1):
        try:
            return super().read(size)
        except OSError as exc:
            self.read_error = exc
            raise


class _TrackedObject(io.RawIOBase):
    """``_TrackedFile`` for an object on an object store: positioned reads, each retried
    by the storage seam; a read that still fails is remembered the same way."""

    read_error: OSError | None = None

    def __init__(self, loc: Location):
        self.loc, self.pos = loc, 0
        self.reader = loc.open_random()
        self.nbytes = self.reader.size()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.nbytes + offset
        return self.pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.nbytes - self.pos))
        try:
            data = retried(lambda: self.reader.read_at(n, self.pos)) if n else b""
        except OSError as exc:
            self.read_error = exc
            raise
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        self.reader.close()
        super().close()


def _iter_parquet(sf: SourceFile) -> Iterator[Item]:
    import pyarrow.parquet as pq

    row = 0
    try:
        fh = _TrackedFile(sf.path, "r") if location(sf.path).is_local else _TrackedObject(sf.path)
    except FileNotFoundError as exc:
        yield _missing(sf, exc)
        return
    except OSError as exc:
        raise InputReadError(f"{sf.label}: cannot read file: {exc}") from exc
    with fh:
        try:
            parquet = pq.ParquetFile(fh)
            for batch in parquet.iter_batches(batch_size=1024):
                for record in batch.to_pylist():
                    row += 1
                    yield _to_document(sf, row, record, json.dumps(record, default=str, ensure_ascii=False))
        except Exception as exc:  # pyarrow raises several types for corrupt files
            if fh.read_error is not None:
                raise InputReadError(f"{sf.label}: read error after row {row}: {fh.read_error}") from exc
            yield _reject(sf, row + 1, f"unreadable parquet after row {row}: {type(exc).__name__}: {exc}")
            return
    if row == 0:
        yield _reject(sf, 0, "empty file (no rows)")
