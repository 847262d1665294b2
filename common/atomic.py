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


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 1, sort_keys: bool = True) -> Path:
    """JSON with a trailing newline (the layout each caller has always written is kept
    through ``indent`` and ``sort_keys``)."""
    return write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")
