"""The folders of one stage: output, work folder, markers, publishing and the manifest.

Layout of a stage's output folder::

    <output>/_work/stage.json         what the work folder was computed from
    <output>/_work/<step>/...         each step's task outputs, task records, DONE
    <output>/<published outputs>      renamed into place when the stage finishes
    <output>/manifest.json            written last: the stage is complete

The stage's identity is a digest of its settings (the configuration that decides the
outputs) and of its inputs (names, sizes and modification times of the input files).
A stage whose manifest exists under the same identity (kept in the work folder) is
complete and is not run again; otherwise the manifest and every published output are removed before any step
runs, so a reader never mixes outputs of two configurations. Steps decide for
themselves what of the work folder they can reuse (runner.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable

from common.atomic import is_temp, write_json

WORK_DIR = "_work"
MANIFEST_NAME = "manifest.json"
STAGE_MARKER = "stage.json"


def digest(value: Any) -> str:
    """A short stable digest of JSON-able data (key order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def file_key(i: int) -> str:
    """The task key of a stage's i-th input file (files are numbered in sorted order)."""
    return f"f{i:06d}"


def file_fingerprint(path: str | os.PathLike, label: str | None = None) -> dict[str, Any]:
    """What a result computed from a file depends on: its name, size and mtime. A file that
    is gone (a dangling link, or deleted since it was listed) is fingerprinted as missing:
    its reader quarantines it, and the job goes on."""
    try:
        stat = Path(path).stat()
    except FileNotFoundError:
        return {"file": label or str(path), "size": 0, "mtime_ns": 0, "missing": True}
    return {"file": label or str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class Stage:
    """One stage's output folder (``outputs``: names or glob patterns of what it publishes there)."""

    def __init__(self, name: str, output: str | os.PathLike, settings: Any, inputs: Any, outputs: Iterable[str]):
        self.name = name
        self.output = Path(output)
        self.work = self.output / WORK_DIR
        self.outputs = tuple(outputs)
        self.identity = digest({"stage": name, "settings": settings, "inputs": inputs})

    @property
    def manifest_path(self) -> Path:
        return self.output / MANIFEST_NAME

    def is_complete(self) -> bool:
        """The manifest exists and was written by a run of this very configuration and input."""
        return self.manifest_path.exists() and self._marker() == self.identity

    def read_manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def begin(self) -> None:
        """Make the folder ready for a run: no manifest, no published outputs of another run."""
        self.manifest_path.unlink(missing_ok=True)
        previous = self._marker()
        if previous is not None and previous != self.identity:
            print(f"{self.name}: {self.output} holds a run of another config or input; starting over", file=sys.stderr)
        for pattern in self.outputs:
            for path in sorted(self.output.glob(pattern)):
                remove_path(path)
        self.work.mkdir(parents=True, exist_ok=True)
        write_json(self.work / STAGE_MARKER, {"stage": self.name, "identity": self.identity})

    def step_dir(self, step: str) -> Path:
        path = self.work / step
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, source: Path, name: str) -> Path:
        """Rename a finished output from the work folder into the output folder.

        Idempotent: when an earlier attempt already moved it, there is nothing to do.
        """
        target = self.output / name
        if not source.exists():
            if not target.exists():  # the step wrote nothing to publish: an empty output
                target.mkdir(parents=True)
            return target
        sweep_temporaries(source)
        remove_path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        return target

    def finish(self, manifest: dict[str, Any], keep_work: bool, indent: int | None = 1, sort_keys: bool = True) -> None:
        """Write the manifest (last: it marks the stage complete); drop the work folder
        unless asked to keep it (resume state and intermediate files for inspection).
        Without a work folder a later run cannot tell that the stage is complete, and
        runs it again."""
        if not keep_work:
            remove_path(self.work)
        write_json(self.manifest_path, manifest, indent=indent, sort_keys=sort_keys)

    def _marker(self) -> str | None:
        try:
            return json.loads((self.work / STAGE_MARKER).read_text(encoding="utf-8")).get("identity")
        except (OSError, ValueError):
            return None


def sweep_temporaries(folder: Path) -> None:
    """Remove what writers killed mid-file left behind (their temporary names)."""
    if folder.is_file():
        return
    for path in sorted(folder.rglob("*"), reverse=True):
        if is_temp(path):
            remove_path(path)


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
