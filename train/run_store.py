"""A run's folder and its inputs on a local disk or an object store (``s3://``, ``gs://``).

A local ``run_dir`` is used as it is. A ``run_dir`` URL gets a local working copy under the
cache folder: the trainer writes there as it always has, and ``publish`` sends finished
files to the store, each one whole (the seam uploads a file in one request or a multipart
upload completed at the end). Checkpoints keep their own order (train.checkpoint).

Things the run only reads (token shards, a checkpoint to resume from, an ``init_from``
model) are fetched once into the cache folder and mapped from there; shards are the big
ones, so their part of the cache is bounded and the least recently used files not needed
by this run are evicted first.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Sequence

from common.atomic import is_temp
from common.storage import Location, cache_root, is_url, location
from pipeline.shard_format import MANIFEST_NAME, TOKENIZER_NAME, split_dir

_GB = 1 << 30


def fetch_tree(folder: Location, cache: Path) -> Path:
    """A local copy of every file below ``folder`` (the folder itself when local)."""
    if folder.is_local:
        return Path(folder.path)
    files = folder.list_files()
    if not files:
        raise FileNotFoundError(2, "No such folder or it is empty", str(folder))
    for loc in files:
        loc.fetch(cache)
    return cache / folder.scheme / folder.path


class RunStore:
    """Where a run's files go: ``local`` is written by the trainer; a remote run gets copies."""

    def __init__(self, run_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
        self.remote: Location | None = location(str(run_dir)) if is_url(run_dir) else None
        self.cache = cache_root(cache_dir)
        if self.remote is None:
            self.local = Path(run_dir)
        else:
            self.local = self.cache / "runs" / self.remote.scheme / self.remote.path

    def url(self, rel: str = "") -> str:
        """The name a user knows a file of the run by (URL or local path)."""
        if self.remote is None:
            return str(self.local / rel) if rel else str(self.local)
        return str(self.remote / rel) if rel else str(self.remote)

    def publish(self, *rels: str) -> None:
        """Copy finished files (or every file of a folder) of the working copy to the store."""
        if self.remote is None:
            return
        for rel in rels:
            path = self.local / rel
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                if file.is_file() and not file.name.endswith(".tmp"):
                    (self.remote / file.relative_to(self.local).as_posix()).upload_from(file)

    def pull(self, rel: str) -> None:
        """Make the working copy's file the store's (absent when the store has none)."""
        if self.remote is None:
            return
        source, target = self.remote / rel, self.local / rel
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
        else:
            target.unlink(missing_ok=True)


def local_model(source: str, cache_dir: str | os.PathLike | None) -> Path:
    """``init_from`` as a local folder (fetched once when it names an object store)."""
    return fetch_tree(location(source), cache_root(cache_dir) / "models")


def local_token_root(root: str, seq_lens: Sequence[int], splits: Sequence[str],
                     cache_dir: str | os.PathLike | None, max_gb: float) -> Path:
    """The shard folders the run needs, on a local disk: ``root`` itself when local, else
    fetched into ``<cache>/shards`` (bounded by ``max_gb``, least recently used evicted)."""
    source = location(root)
    if source.is_local:
        return Path(source.path)
    cache = cache_root(cache_dir) / "shards"
    wanted: list[Location] = []
    for seq_len in seq_lens:
        for split in splits:
            folder = source / split_dir("", seq_len, split).as_posix()
            wanted += [f for f in folder.list_files(recursive=False)
                       if f.name.endswith(".arrow") or f.name == MANIFEST_NAME]
    tokenizer = source / TOKENIZER_NAME  # the shards' tokenizer, for the checkpoints' tokenizer files
    if tokenizer.exists():
        wanted.append(tokenizer)
    targets = {cache / f.scheme / f.path: f for f in wanted}
    sizes = {path: f.info().size for path, f in targets.items()}
    _make_room(cache, sizes, int(max_gb * _GB), root)
    for path, loc in targets.items():
        loc.fetch(cache)  # the seam reuses a copy whose size matches
        os.utime(path)  # most recently used
    return cache / source.scheme / source.path


def shards_tokenizer(root: str, cache_dir: str | os.PathLike | None) -> Path:
    """Where the tokenizer.json beside the shards is on this machine (fetched with the shards)."""
    source = location(root)
    if source.is_local:
        return Path(source.path) / TOKENIZER_NAME
    return cache_root(cache_dir) / "shards" / source.scheme / source.path / TOKENIZER_NAME


def _make_room(cache: Path, needed: dict[Path, int], limit: int, root: str) -> None:
    """Evict cached shards this run does not need, oldest use first, until ``needed`` fits."""
    total = sum(needed.values())
    if total > limit:
        raise ValueError(f"the shards this run reads from {root} take {total / _GB:.2f} GB, more than "
                         f"cache_max_gb={limit / _GB:g}: raise it or point cache_dir at a larger disk")
    others = _cached_files(cache, needed)
    present = sum(size for _, size, _ in others)
    present += sum(size for p, size in needed.items() if p.is_file() and p.stat().st_size == size)
    missing = sum(size for p, size in needed.items() if not (p.is_file() and p.stat().st_size == size))
    for path, size, _ in sorted(others, key=lambda entry: entry[2]):
        if present + missing <= limit:
            break
        present -= size
        path.unlink(missing_ok=True)


def _cached_files(cache: Path, needed: dict[Path, int]) -> list[tuple[Path, int, int]]:
    """(path, size, mtime) of each cached file this run does not need. Ranks on one machine
    share the cache: another rank's temporary files, and files that go while we look, are
    not counted."""
    found = []
    for path in cache.rglob("*") if cache.is_dir() else []:
        if path in needed or is_temp(path):
            continue
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode):
            found.append((path, info.st_size, info.st_mtime_ns))
    return found
