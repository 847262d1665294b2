"""Atomic file writes: one temporary-name rule for every writer in the project.

A file is written under ``<name>.<pid>.tmp`` beside its final path and renamed into
place only when complete, so a reader (or a resumed run) never sees half a file. The
process id in the name keeps a stray writer of a killed run (Ray workers can outlive
their driver briefly) from sharing a temporary file with a re-run. Folders (checkpoints,
corpora) follow the same rule with ``atomic_dir``.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

TMP_SUFFIX = ".tmp"


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name this process writes ``path`` under (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")


def is_temp(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a leftover temporary file or folder of some writer."""
    return Path(path).name.endswith(TMP_SUFFIX)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the temporary path to write; rename it to ``path`` when the block succeeds.

    On an error the temporary file is removed and the final path is left untouched.
    """
    final = Path(path)
    tmp = temp_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; it replaces ``path`` (if any) when the block succeeds."""
    final = Path(path)
    tmp = temp_path(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(path: Any, data: bytes) -> Any:
    """Write ``data`` whole to a local path or any location of the storage seam (common.storage,
    which commits local files with ``atomic_path``: one rule for both)."""
    from common.storage import location  # the seam builds on this module

    loc = location(path).write_bytes(data)
    return loc.local_path if loc.is_local else loc


def write_text(path: Any, text: str) -> Any:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Any, data: Any, indent: int | None = 1, sort_keys: bool = True) -> Any:
    """JSON with a trailing newline (the layout each caller has always written is kept
    through ``indent`` and ``sort_keys``), to a local path or a storage location."""
    return write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")
