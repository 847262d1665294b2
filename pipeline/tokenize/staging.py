"""Local files for tasks whose step folder may be on an object store.

The packing and Megatron steps map their inputs (the encode step's part files) and write
through temporary names and renames, so they work on local files. On a local disk those
are the step folders themselves, as always. On an object store a task copies the parts it
reads into a temporary folder of its own node, writes into another, and uploads what it
wrote (each file whole) before it returns, so its task record (written by the driver after
the task returned) only ever names complete objects, and no node reads another's disk.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from common.atomic import is_temp
from common.storage import Location, location


@contextmanager
def local_output(folder: Path | Location) -> Iterator[Path]:
    """A local folder to write into; on an object store its files go to ``folder`` at a clean exit."""
    target = location(folder)
    if target.is_local:
        yield Path(target.path)
        return
    scratch = Path(tempfile.mkdtemp(prefix="tokenize-out-"))
    try:
        yield scratch
        for path in sorted(p for p in scratch.rglob("*") if p.is_file() and not is_temp(p)):
            (target / path.relative_to(scratch).as_posix()).upload_from(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def local_inputs(files: Sequence[Path | Location]) -> Iterator[list[Path]]:
    """Local copies of ``files`` (the files themselves on a local disk), removed at the end."""
    sources = [location(f) for f in files]
    if all(s.is_local for s in sources):
        yield [Path(s.path) for s in sources]
        return
    scratch = Path(tempfile.mkdtemp(prefix="tokenize-in-"))
    try:
        yield [s.fetch(scratch) for s in sources]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
