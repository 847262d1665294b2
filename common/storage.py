"""The storage seam: every file the project reads or writes, on a local disk or an object store.

``location("s3://bucket/prefix")``, ``location("gs://...")``, ``location("file:///abs")`` or
``location("/abs/path")`` gives a ``Location``; every stage reads, lists and writes through it,
so a stage runs the same on one machine's disk and on a cluster whose only shared storage is
an object store. The file systems are ``pyarrow.fs`` (S3 and GCS natively; the standard
``AWS_*`` environment, ``AWS_ENDPOINT_URL`` included, or a ``storage:`` config section).

Committed whole ("complete or absent"): on a local disk a file is written under
``<name>.<pid>.tmp`` and renamed into place (common.atomic); an object store has no rename,
so a writer spools to a local temporary file and uploads it in one request (a PUT, or a
multipart upload completed only at the end): the object appears only when complete, and an
upload that fails is simply sent again from the spool.

Transient errors (timeouts, 5xx answers, resets, throttling) are retried with backoff: by
pyarrow's S3 retry strategy for each request, and by this module for whole operations and
for a stream that dies mid-body (re-opened at the offset reached). What still fails is an
``OSError`` (the stage kernel retries the task); a missing object is ``FileNotFoundError``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

from common.atomic import atomic_path, is_temp
from common.filesystems import REMOTE_SCHEMES, StorageConfig, filesystem
from common.storage_retry import InputReadError, ResumingReader, retried

__all__ = ["FileStat", "InputReadError", "Location", "StorageConfig", "cache_root", "is_url", "location", "retried",
           "spooled", "sweep_temporaries"]

_COPY_CHUNK = 8 << 20
CACHE_NAME = "btlm-cache"  # below the system's temporary folder when no cache folder is named
CACHE_ENV = "BTLM_CACHE_DIR"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """This machine's folder for local copies of object-store files (shards, models, a
    stage's work folder): ``cache_dir``, else ``$BTLM_CACHE_DIR``, else ``<temp>/btlm-cache``."""
    if cache_dir:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / CACHE_NAME)


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime_ns: int | None


def location(path_or_url: "str | os.PathLike | Location", cfg: StorageConfig | None = None) -> "Location":
    """The Location of a local path (absolute or relative), ``file://`` URL or ``s3://`` / ``gs://`` URL."""
    if isinstance(path_or_url, Location):
        return path_or_url
    text = os.fspath(path_or_url)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        scheme = scheme.lower()
        if scheme == "file":
            return Location(None, str(Path(urlparse(text).path)), cfg)
        if scheme not in REMOTE_SCHEMES:
            raise ValueError(f"unsupported storage URL {text!r} (use s3://, gs://, file:// or a local path)")
        return Location(scheme, rest.strip("/"), cfg)
    return Location(None, str(Path(text)), cfg)  # as pathlib spells it, as every stage always did


def is_url(path_or_url: Any) -> bool:
    """Whether a user's location names an object store (not a local path or file:// URL)."""
    text = str(path_or_url)
    return "://" in text and text.split("://", 1)[0].lower() in REMOTE_SCHEMES


@dataclass(frozen=True)
class Location:
    """A file or folder on a local disk (``scheme`` None) or an object store (``bucket/key``)."""

    scheme: str | None
    path: str  # local: the path as given; remote: "bucket/key" without slashes at the ends
    cfg: StorageConfig | None = field(default=None, repr=False, compare=False)

    # --- naming -----------------------------------------------------------------------

    def __str__(self) -> str:
        return self.path if self.scheme is None else f"{self.scheme}://{self.path}"

    def __fspath__(self) -> str:
        if self.scheme is not None:
            raise TypeError(f"{self} is on an object store, not a local path")
        return self.path

    def __truediv__(self, name: str) -> "Location":
        name = str(name)
        if self.scheme is None:
            return Location(None, str(Path(self.path) / name), self.cfg)
        return Location(self.scheme, f"{self.path}/{name.strip('/')}" if self.path else name.strip("/"), self.cfg)

    @property
    def name(self) -> str:
        return Path(self.path).name if self.scheme is None else self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "Location":
        if self.scheme is None:
            return Location(None, str(Path(self.path).parent), self.cfg)
        return Location(self.scheme, self.path.rsplit("/", 1)[0] if "/" in self.path else "", self.cfg)

    def with_name(self, name: str) -> "Location":
        """A sibling: this location's parent / ``name``."""
        return self.parent / name

    @property
    def is_local(self) -> bool:
        return self.scheme is None

    @property
    def local_path(self) -> Path | None:
        return Path(self.path) if self.scheme is None else None

    def relative_to(self, root: "Location") -> str:
        """This location's path below ``root``, with "/" separators."""
        if self.scheme is None:
            return Path(self.path).relative_to(root.path).as_posix()
        prefix = root.path + "/" if root.path else ""
        if not self.path.startswith(prefix):
            raise ValueError(f"{self} is not under {root}")
        return self.path[len(prefix):]

    @property
    def fs(self) -> Any:
        return filesystem(self.scheme, self.cfg)

    # --- facts ------------------------------------------------------------------------

    def _info(self) -> Any:
        return retried(lambda: self.fs.get_file_info(self.path))

    def exists(self) -> bool:
        if self.scheme is None:
            return os.path.exists(self.path)
        from pyarrow.fs import FileType

        return self._info().type != FileType.NotFound

    def is_file(self) -> bool:
        if self.scheme is None:
            return os.path.isfile(self.path)
        from pyarrow.fs import FileType

        return self._info().type == FileType.File

    def is_dir(self) -> bool:
        """Local: a folder. Object store: a bucket, or a prefix with at least one object below it."""
        if self.scheme is None:
            return os.path.isdir(self.path)
        from pyarrow.fs import FileSelector, FileType

        infos = retried(lambda: self.fs.get_file_info(FileSelector(self.path, allow_not_found=True, recursive=False)))
        # pyarrow's GCS listing of one level leaves out the sub-prefixes: only folders below
        return bool(infos) or self._info().type == FileType.Directory

    def info(self) -> FileStat:
        """Size and modification time (raises FileNotFoundError when absent)."""
        if self.scheme is None:
            st = os.stat(self.path)
            return FileStat(st.st_size, st.st_mtime_ns)
        from pyarrow.fs import FileType

        info = self._info()
        if info.type == FileType.NotFound:
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return FileStat(int(info.size or 0), info.mtime_ns)

    def list_files(self, recursive: bool = True, suffixes: Sequence[str] | None = None) -> list["Location"]:
        """Files (never folders) below this location, sorted by path; none when it does not exist."""
        if self.scheme is None:
            root = Path(self.path)
            if not root.is_dir():
                return []
            found = (p for p in (root.rglob("*") if recursive else root.iterdir()) if p.is_file() or p.is_symlink())
            paths = sorted(str(p) for p in found if not p.is_dir())
            out = [Location(None, p, self.cfg) for p in paths]
        else:
            from pyarrow.fs import FileSelector, FileType

            selector = FileSelector(self.path, allow_not_found=True, recursive=recursive)
            infos = retried(lambda: self.fs.get_file_info(selector))
            out = sorted((Location(self.scheme, i.path, self.cfg) for i in infos if i.type == FileType.File),
                         key=lambda loc: loc.path)
        if suffixes:
            out = [loc for loc in out if loc.name.endswith(tuple(suffixes))]
        return out

    # --- reading ----------------------------------------------------------------------

    def open_read(self) -> Any:
        """A streaming binary reader (context manager). On an object store each read is retried
        and a stream that dies mid-body is re-opened at the offset reached."""
        if self.scheme is None:
            return open(self.path, "rb")
        return ResumingReader(self)

    def open_random(self) -> Any:
        """A random access reader: ``read_at(nbytes, offset)``, ``size()``, ``seek``/``read``."""
        if self.scheme is None:
            import pyarrow as pa

            return pa.OSFile(self.path, "r")
        return retried(lambda: self.fs.open_input_file(self.path))

    def read_bytes(self) -> bytes:
        if self.scheme is None:
            return Path(self.path).read_bytes()

        def read() -> bytes:  # one ranged GET of the whole object (a stream's read() would GET it in small pieces)
            with self.fs.open_input_file(self.path) as fh:
                return fh.read_at(fh.size(), 0)

        return retried(read)

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    # --- writing (committed whole) --------------------------------------------------------

    def write_bytes(self, data: bytes) -> "Location":
        if self.scheme is None:
            with atomic_path(self.path) as tmp:
                Path(tmp).write_bytes(data)
            return self

        def put() -> None:
            with self.fs.open_output_stream(self.path, compression=None) as fh:  # bytes as given, even for .zst
                fh.write(data)

        retried(put)
        return self

    def write_text(self, text: str) -> "Location":
        return self.write_bytes(text.encode("utf-8"))

    @contextmanager
    def open_write(self) -> Iterator[Any]:
        """A binary writer whose file appears under this name only when the block ends cleanly."""
        if self.scheme is None:
            with atomic_path(self.path) as tmp, open(tmp, "wb") as fh:
                yield fh
            return
        with spooled(self) as local:
            with open(local, "wb") as fh:
                yield fh

    def upload_from(self, local: str | os.PathLike) -> None:
        """Copy a finished local file here (one request, or a multipart upload completed at the end)."""
        if self.scheme is None:
            with atomic_path(self.path) as tmp:
                shutil.copyfile(local, tmp)
            return

        def put() -> None:
            with open(local, "rb") as src, self.fs.open_output_stream(self.path, compression=None) as dst:
                while chunk := src.read(_COPY_CHUNK):
                    dst.write(chunk)

        retried(put)

    # --- removing and copying ---------------------------------------------------------

    def remove(self) -> None:
        """Remove this file (missing is fine)."""
        if self.scheme is None:
            path = Path(self.path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            return
        try:
            retried(lambda: self.fs.delete_file(self.path))
        except FileNotFoundError:
            pass

    def remove_tree(self) -> None:
        """Remove this folder (or prefix) and everything below it, or this file (missing is fine)."""
        if self.scheme is None:
            self.remove()
            return
        from pyarrow.fs import FileType

        kind = self._info().type
        if kind == FileType.File:
            self.remove()
        elif kind == FileType.Directory:  # batched deletes of everything below the prefix
            try:
                retried(lambda: self.fs.delete_dir(self.path))
            except FileNotFoundError:  # GCS: the contents are gone, there was no folder marker object
                pass

    def copy_to(self, other: "Location") -> None:
        """Copy this file to ``other``: server-side when both are on one object store."""
        if self.scheme is not None and self.scheme == other.scheme:
            retried(lambda: self.fs.copy_file(self.path, other.path))
            return
        if self.scheme is None:
            other.upload_from(self.path)
            return
        with other.open_write() as dst, self.open_read() as src:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)

    def fetch(self, cache_dir: str | os.PathLike) -> Path:
        """A local copy (for readers that map files): the file itself when local; else
        downloaded once into ``cache_dir`` and reused while its size matches."""
        if self.scheme is None:
            return Path(self.path)
        target = Path(cache_dir) / self.scheme / self.path
        size = self.info().size
        if target.exists() and target.stat().st_size == size:
            return target
        with atomic_path(target) as tmp, open(tmp, "wb") as dst, self.open_read() as src:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)
        return target


def write_bytes(path_or_url: "str | os.PathLike | Location", data: bytes) -> "Path | Location":
    """``data`` committed whole at a local path (``common.atomic``'s rule) or any URL; returns
    the local ``Path``, or the ``Location`` of an object."""
    loc = location(path_or_url).write_bytes(data)
    return loc.local_path if loc.is_local else loc


def write_text(path_or_url: "str | os.PathLike | Location", text: str) -> "Path | Location":
    return write_bytes(path_or_url, text.encode("utf-8"))


def write_json(path_or_url: "str | os.PathLike | Location", data: Any, indent: int | None = 1,
               sort_keys: bool = True) -> "Path | Location":
    """JSON with a trailing newline, as ``common.atomic.write_json`` writes it, anywhere."""
    return write_text(path_or_url, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


@contextmanager
def spooled(loc: "Location | str | os.PathLike") -> Iterator[Path]:
    """A local file to write; uploaded to ``loc`` when the block ends cleanly, dropped otherwise.
    On a local disk the file is ``loc``'s own temporary name (no copy)."""
    loc = location(loc)
    if loc.is_local:
        with atomic_path(loc.path) as tmp:
            yield Path(tmp)
        return
    fd, name = tempfile.mkstemp(prefix="spool-", suffix=f"-{loc.name}")
    os.close(fd)
    try:
        yield Path(name)
        loc.upload_from(name)
    finally:
        os.unlink(name)


def sweep_temporaries(folder: Location) -> None:
    """Remove what local writers killed mid-file left behind (their temporary names). An
    object store has none: its writers spool locally and upload whole."""
    if not folder.is_local:
        return
    root = Path(folder.path)
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*"), reverse=True):
        if is_temp(path):
            Location(None, str(path)).remove()
