"""Finding the files of a source and ordering them before the byte cap cuts the list."""

from __future__ import annotations

import hashlib
import os
import re
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pipeline.sample.config import SourceConfig


@dataclass(frozen=True)
class Candidate:
    origin: str  # "<root name>/<path under root>" as found (may end in .gz)
    path: Path
    render: str

    @property
    def clean_origin(self) -> str:
        """The origin recorded in meta: without the compression suffix."""
        return self.origin[:-3] if self.origin.endswith(".gz") else self.origin


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a path glob: ``*``/``?``/``[..]`` stay within a folder, ``**/`` spans folders."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[^" + re.escape(body[1:]) + "]" if body.startswith("!") else "[" + body + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _static_prefix(pattern: str) -> str:
    """The folders of a glob before its first wildcard (only they need walking)."""
    parts = []
    for part in pattern.split("/")[:-1]:
        if any(ch in part for ch in "*?["):
            break
        parts.append(part)
    return "/".join(parts)


def resolve_roots(roots: dict[str, str]) -> dict[str, Path]:
    paths = sysconfig.get_paths()
    values = {"stdlib": paths["stdlib"], "purelib": paths["purelib"], "platlib": paths["platlib"]}
    return {name: Path(folder.format(**values)) for name, folder in roots.items()}


def find_candidates(
    src: SourceConfig, roots: dict[str, Path], walked: dict[Path, list[str]] | None = None
) -> list[Candidate]:
    """Regular files (symlinks skipped: they are aliases, not documents) matching the source.

    ``walked`` caches folder listings across rules and sources (several globs share a root).
    """
    walked = {} if walked is None else walked
    excludes = [glob_regex(p) for p in src.exclude]
    found: dict[str, Candidate] = {}
    for rule in src.include:
        root = roots[rule.root]
        regex = glob_regex(rule.glob)
        start = root / _static_prefix(rule.glob)
        if start not in walked:
            walked[start] = sorted(_walk(start, root))
        for rel in walked[start]:
            origin = f"{rule.root}/{rel}"
            if origin in found or not regex.match(rel) or any(x.match(origin) for x in excludes):
                continue
            found[origin] = Candidate(origin, root / rel, rule.render)
    return [found[k] for k in sorted(found)]


def _walk(start: Path, root: Path) -> Iterator[str]:
    """Paths of regular files under ``start``, relative to ``root`` (symlinks not followed)."""
    prefix = start.relative_to(root).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    stack = [(str(start), prefix)]
    while stack:
        folder, rel = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink():
                continue
            if entry.is_dir():
                if entry.name != "__pycache__":
                    stack.append((entry.path, f"{rel}{entry.name}/"))
            elif entry.is_file():
                yield rel + entry.name


def _hash(seed: int, key: str) -> str:
    return hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).hexdigest()


def tail_key(origin: str) -> str:
    """Last two path parts, lowercased, leading underscores and .gz dropped.

    pip/_vendor/packaging/version.py and packaging/version.py share the key, and so do
    setuptools/_distutils/core.py and the standard library's distutils/core.py.
    """
    name = origin[:-3] if origin.endswith(".gz") else origin
    return "/".join(p.lstrip("_").lower() for p in name.split("/")[-2:])


def family_key(origin: str) -> str:
    """First word of the file name: git-commit.1 -> git, find.info-2 -> find."""
    return re.split(r"[-_.]", origin.rsplit("/", 1)[-1].lower(), maxsplit=1)[0]


def order_candidates(cands: list[Candidate], order: str, seed: int) -> list[Candidate]:
    if order == "by_tail":
        return sorted(cands, key=lambda c: (_hash(seed, tail_key(c.origin)), c.origin))
    rank: Counter[str] = Counter()
    keyed = []
    for c in sorted(cands, key=lambda c: c.origin):  # ranks follow origin order
        fam = family_key(c.origin)
        keyed.append(((rank[fam], _hash(seed, fam), c.origin), c))
        rank[fam] += 1
    return [c for _, c in sorted(keyed, key=lambda kc: kc[0])]
