"""The folders of one stage: output, work folder, markers, publishing and the manifest.

Layout of a stage's output folder (a local folder or an object-store prefix, through
common.storage)::

    <output>/_work/stage.json         what the work folder was computed from
    <output>/_work/<step>/...         each step's task outputs, task records, DONE
    <output>/<published outputs>      moved (local) or copied (object store) into place at the end
    <output>/manifest.json            written last: the stage is complete

The work folder is ``<output>/_work`` unless ``run.work_dir`` puts it elsewhere: by default
an object-store output whose tasks all run on this machine keeps it on the local disk
(below the cache folder), where it is read and written at disk speed and only the
published outputs travel to the store; a cluster keeps it on the store, the one storage
every node sees.

Commit without rename. A local disk commits every file by renaming a temporary name and
publishes a finished output folder by renaming it. An object store has no rename, so:
every object is uploaded whole (it appears complete or not at all, common.storage); a
task's objects are all uploaded before the driver writes its record (``<key>.done.json``),
and a step's ``DONE`` after every record; readers trust only what a record, ``DONE`` or
the manifest names. Publishing *copies* each object of a finished output server-side
(no bytes pass through the driver) from the work folder to its final name, rather than
having tasks write final names directly: task code keeps one write path (its step
folder) on every store, the published names are only ever filled from recorded, complete
steps, and publishing is idempotent -- a run killed mid-publish copies again the same
bytes, since tasks are deterministic. The manifest is written last, as on a local disk.

The stage's identity is a digest of its settings (the configuration that decides the
outputs) and of its inputs (names, sizes and modification times of the input files).
A stage whose manifest exists under the same identity (kept in the work folder) is
complete and is not run again; otherwise the manifest and every published output are removed before any step
runs, so a reader never mixes outputs of two configurations. Steps decide for
themselves what of the work folder they can reuse (runner.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from common.atomic import is_temp
from common.storage import Location, StorageConfig, cache_root, location, write_json
from common.storage import sweep_temporaries as _sweep
from pipeline.kernel.ray_runtime import on_this_machine_only

WORK_DIR = "_work"
MANIFEST_NAME = "manifest.json"
STAGE_MARKER = "stage.json"
PUBLISH_THREADS = 8  # objects copied or uploaded at a time when publishing to an object store


def digest(value: Any) -> str:
    """A short stable digest of JSON-able data (key order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def work_location(stage: str, root: Location, work_dir: str = "auto", storage: StorageConfig | None = None) -> Location:
    """The work folder of ``stage`` writing to ``root`` (``run.work_dir``: auto, output, or a
    folder or URL below which each stage and output gets a folder of its own)."""
    if work_dir == "output" or (work_dir == "auto" and (root.is_local or not on_this_machine_only())):
        return root / WORK_DIR
    parent = location(cache_root() / "stage-work" if work_dir == "auto" else work_dir, storage)
    where = os.path.abspath(root.path) if root.is_local else str(root)
    return parent / f"{stage}-{digest(where)[:12]}"


def file_key(i: int) -> str:
    """The task key of a stage's i-th input file (files are numbered in sorted order)."""
    return f"f{i:06d}"


def file_fingerprint(path: str | os.PathLike | Location, label: str | None = None) -> dict[str, Any]:
    """What a result computed from a file depends on: its name, size and mtime (an object's
    last-modified time). A file that is gone (a dangling link, or deleted since it was
    listed) is fingerprinted as missing: its reader quarantines it, and the job goes on."""
    try:
        stat = location(path).info()
    except FileNotFoundError:
        return {"file": label or str(path), "size": 0, "mtime_ns": 0, "missing": True}
    return {"file": label or str(path), "size": stat.size, "mtime_ns": stat.mtime_ns}


class Stage:
    """One stage's output folder (``outputs``: names or glob patterns of what it publishes there).

    ``root`` and ``work_root`` are the storage locations; ``output`` and ``work`` are the
    same as plain paths on a local disk (for steps that map or append to local files) and
    the locations otherwise; ``step_dir`` likewise."""

    def __init__(self, name: str, output: str | os.PathLike | Location, settings: Any, inputs: Any,
                 outputs: Iterable[str], storage: StorageConfig | None = None, work_dir: str = "auto"):
        self.name = name
        self.root = location(output, storage)
        self.work_root = work_location(name, self.root, work_dir, storage)
        self.output = self.root.local_path or self.root
        self.work = self.work_root.local_path or self.work_root
        self.outputs = tuple(outputs)
        self.identity = digest({"stage": name, "settings": settings, "inputs": inputs})

    @property
    def manifest_path(self) -> Path | Location:
        return self.output / MANIFEST_NAME

    def is_complete(self) -> bool:
        """The manifest exists and was written by a run of this very configuration and input."""
        return (self.root / MANIFEST_NAME).exists() and self._marker() == self.identity

    def read_manifest(self) -> dict[str, Any]:
        return json.loads((self.root / MANIFEST_NAME).read_text())

    def begin(self) -> None:
        """Make the folder ready for a run: no manifest, no published outputs of another run."""
        (self.root / MANIFEST_NAME).remove()
        previous = self._marker()
        if previous is not None and previous != self.identity:
            print(f"{self.name}: {self.root} holds a run of another config or input; starting over", file=sys.stderr)
        for target in self._published():
            target.remove_tree()
        if self.work_root != self.root / WORK_DIR:
            print(f"{self.name}: work folder {self.work_root} (run.work_dir)", file=sys.stderr)
        if self.work_root.is_local:
            Path(self.work).mkdir(parents=True, exist_ok=True)
        write_json(self.work_root / STAGE_MARKER, {"stage": self.name, "identity": self.identity})

    def _published(self) -> list[Location]:
        """What of the output folder the stage's output names and patterns match."""
        if self.root.is_local:
            return [location(p) for pattern in self.outputs for p in sorted(Path(self.output).glob(pattern))]
        tops = sorted({f.relative_to(self.root).split("/", 1)[0] for f in self.root.list_files()})
        return [self.root / top for pattern in self.outputs for top in tops if fnmatch.fnmatchcase(top, pattern)]

    def step_dir(self, step: str) -> Path | Location:
        if self.work_root.is_local:
            path = Path(self.work) / step
            path.mkdir(parents=True, exist_ok=True)
            return path
        return self.work_root / step

    def publish(self, source: Path | Location, name: str) -> Path | Location:
        """Move (both local) or copy (server-side within one object store, else uploaded or
        downloaded) a finished output of the work folder into the output folder.

        Idempotent: when an earlier attempt already published it, the result is the same.
        """
        if not (self.root.is_local and location(source).is_local):
            source, target = location(source), self.root / name
            files = source.list_files() if source.is_dir() else ([source] if source.is_file() else [])
            files = [f for f in files if not (f.is_local and is_temp(Path(f.path)))]  # a killed writer's leftovers
            # every object is complete (recorded by its task); several copies or uploads at a time
            with ThreadPoolExecutor(PUBLISH_THREADS) as pool:
                list(pool.map(lambda f: f.copy_to(target / f.relative_to(source) if f != source else target), files))
            return target
        source, target = Path(source), Path(self.output) / name
        if not source.exists():
            if not target.exists():  # the step wrote nothing to publish: an empty output
                target.mkdir(parents=True)
            return target
        sweep_temporaries(source)
        remove_path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)  # a rename, unless run.work_dir is on another disk
        return target

    def finish(self, manifest: dict[str, Any], keep_work: bool, indent: int | None = 1, sort_keys: bool = True) -> None:
        """Write the manifest (last: it marks the stage complete); drop the work folder
        unless asked to keep it (resume state and intermediate files for inspection).
        Without a work folder a later run cannot tell that the stage is complete, and
        runs it again."""
        if not keep_work:
            self.work_root.remove_tree()
        write_json(self.root / MANIFEST_NAME, manifest, indent=indent, sort_keys=sort_keys)

    def _marker(self) -> str | None:
        try:
            return json.loads((self.work_root / STAGE_MARKER).read_text()).get("identity")
        except (OSError, ValueError):
            return None


def sweep_temporaries(folder: Path | Location) -> None:
    """Remove what writers killed mid-file left behind (their temporary names)."""
    _sweep(location(folder))


def remove_path(path: Path | Location) -> None:
    """Remove a file or a folder tree, if it exists."""
    location(path).remove_tree()
