"""Build the sample corpus from real text found on this machine.

Sources (folder names are part of the demo's contract): ``code`` (Python standard library
and installed packages; vendored copies give real near-duplicates), ``licenses``
(license and Debian copyright files, near-duplicate-rich), ``manpages`` (man and info
pages rendered to plain text) and ``docs`` (READMEs, NEWS, changelogs, package
descriptions). One file is one document. The output is SlimPajama-shaped:
``<output>/<source>/chunk-NNNNN.jsonl.zst`` with records
``{"text": ..., "meta": {"source": <folder>, "origin": "<root name>/<path>"}}``.

Deterministic: files are listed sorted, ordered by a seeded hash and cut by byte caps,
so the same machine and config give a byte-identical corpus. The corpus is built in
``<output>.partial`` and renamed into place with ``manifest.json`` written last.

    python -m pipeline.corpus [--config configs/data/sample.yaml] [key=value ...]
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

from tqdm import tqdm

from common.config import stage_cli, to_dict
from pipeline.corpus_io import ChunkWriter

DEFAULT_CONFIG = "configs/data/sample.yaml"
MANIFEST = "manifest.json"
MANIFEST_KIND = "sample-corpus"


@dataclass
class IncludeRule:
    root: str  # a name from `input`
    glob: str  # matched against the path under the root; ** spans folders
    render: Literal["text", "man", "info"]


@dataclass
class SourceConfig:
    share: float  # fraction of max_total_bytes
    order: Literal["by_tail", "by_family"]
    include: list[IncludeRule]
    exclude: list[str]  # globs on "<root name>/<path>"


@dataclass
class SampleConfig:
    input: dict[str, str]  # root name -> folder ({stdlib}, {purelib}, {platlib} allowed)
    output: str
    max_total_bytes: int
    max_doc_bytes: int
    chunk_bytes: int
    workers: int
    seed: int
    fill_attempts: int  # consecutive documents that do not fit before a source counts as full
    sources: dict[str, SourceConfig]

    def __post_init__(self) -> None:
        for name, src in self.sources.items():
            if not 0 <= src.share <= 1:
                raise ValueError(f"sources.{name}.share must be within [0, 1], got {src.share}")
            for rule in src.include:
                if rule.root not in self.input:
                    raise ValueError(f"sources.{name}.include: root {rule.root!r} is not a key of input")
        if sum(s.share for s in self.sources.values()) > 1 + 1e-9:
            raise ValueError("the shares of all sources add up to more than 1")
        if self.max_doc_bytes <= 0 or self.chunk_bytes <= 0 or self.workers <= 0:
            raise ValueError("max_doc_bytes, chunk_bytes and workers must be positive")


# --- finding files ------------------------------------------------------------------


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


# --- ordering under the cap ---------------------------------------------------------


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


# --- reading and rendering ----------------------------------------------------------


class Skip(Exception):
    """A file that yields no document; the message is the counted reason."""


def read_bytes(path: Path, limit: int) -> bytes:
    """File contents (gzip undone), at most ``limit`` bytes plus one to detect excess."""
    opener: Callable = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            return fh.read(limit + 1)
    except (OSError, EOFError, gzip.BadGzipFile):
        raise Skip("unreadable") from None


def decode_text(data: bytes) -> str:
    if b"\x00" in data:
        raise Skip("binary")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Skip("undecodable") from None


def render_text(path: Path, max_bytes: int) -> str:
    data = read_bytes(path, max_bytes)
    if len(data) > max_bytes:
        raise Skip("oversize")
    return decode_text(data)


# groff left-adjusts and stops hyphenating after each .TH, so words keep single spaces.
_GROFF_PRELUDE = b".am TH\n.ad l\n.nh\n..\n"
_GROFF = shutil.which("groff")


def render_man(path: Path, max_bytes: int) -> str:
    source = read_bytes(path, 4 * max_bytes)
    if len(source) > 4 * max_bytes:
        raise Skip("oversize")
    if b"\x00" in source:
        raise Skip("binary")
    if source.lstrip().startswith(b".so ") and source.count(b"\n") <= 2:
        raise Skip("alias")  # a one-line redirect to another page
    text = _groff(source) if _GROFF else _strip_roff(decode_text(source))
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"
    if len(text.encode("utf-8")) > max_bytes:
        raise Skip("oversize")
    return text


def _groff(source: bytes) -> str:
    env = dict(os.environ, LC_ALL="C.UTF-8", SOURCE_DATE_EPOCH="0")
    cmd = [_GROFF, "-man", "-Tutf8", "-P-cbou", "-rLL=80n"]
    if not source.isascii():
        cmd.insert(1, "-k")  # preconv: UTF-8 input to troff escapes (a no-op on ASCII)
    if b".TS" in source:
        cmd.insert(1, "-t")  # tbl, only for pages with tables (each one is a process)
    try:
        out = subprocess.run(cmd, input=_GROFF_PRELUDE + source, capture_output=True, env=env, timeout=60)
    except subprocess.TimeoutExpired:
        raise Skip("render failed") from None
    if out.returncode != 0 or not out.stdout.strip():
        raise Skip("render failed")
    return decode_text(out.stdout)


def _strip_roff(source: str) -> str:
    """Plain text from roff without groff: drop requests and font escapes (rough)."""
    lines = []
    for line in source.splitlines():
        if line.startswith((".\\\"", "'\\\"")):
            continue
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].partition(" ")
            if macro in ("SH", "SS", "TP", "IP", "B", "I", "BR", "IR", "RB", "BI", "IB", "RI"):
                lines.append(rest.replace('"', ""))
            continue
        lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r"\\f(\[[^]]*\]|\(..|.)", "", text)
    return text.replace("\\-", "-").replace("\\(em", "--").replace("\\e", "\\").replace("\\&", "")


def render_info(path: Path, max_bytes: int) -> str:
    """A GNU info file as text: node separators, tag tables and index markers removed."""
    data = read_bytes(path, max_bytes)
    if len(data) > max_bytes:
        raise Skip("oversize")
    text = decode_text(data.replace(b"\x00\x08[", b"").replace(b"\x00\x08]", b""))
    nodes = [n for n in text.split("\x1f") if n.strip()]
    nodes = [n for n in nodes if not n.lstrip("\n").startswith(("Tag Table:", "Indirect:", "End Tag Table"))]
    text = "\n".join(n.strip("\n") + "\n" for n in nodes)
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)
    return text


RENDERERS = {"text": render_text, "man": render_man, "info": render_info}


def load_document(cand: Candidate, max_bytes: int) -> str:
    text = RENDERERS[cand.render](cand.path, max_bytes)
    if not text.strip():
        raise Skip("empty")
    return text


def ordered_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``map`` over a thread pool, in order, with a bounded look-ahead (stop early freely)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        window: deque[Future] = deque()
        try:
            for item in items:
                window.append(pool.submit(fn, item))
                if len(window) >= 4 * workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for fut in window:
                fut.cancel()


# --- building -----------------------------------------------------------------------


@dataclass
class SourceStats:
    candidates: int = 0
    documents: int = 0
    bytes: int = 0
    budget: int = 0
    chunks: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def build_source(
    name: str,
    src: SourceConfig,
    cfg: SampleConfig,
    roots: dict[str, Path],
    out_dir: Path,
    walked: dict[Path, list[str]],
) -> SourceStats:
    stats = SourceStats(budget=int(cfg.max_total_bytes * src.share))
    cands = order_candidates(find_candidates(src, roots, walked), src.order, cfg.seed)
    stats.candidates = len(cands)
    skipped: Counter[str] = Counter()
    misses = 0

    def load(cand: Candidate) -> tuple[Candidate, str | None, str | None]:
        try:
            return cand, load_document(cand, cfg.max_doc_bytes), None
        except Skip as why:
            return cand, None, str(why)

    bar = tqdm(total=stats.budget, desc=name, unit="B", unit_scale=True, leave=False, file=sys.stderr)
    with ChunkWriter(out_dir / name, prefix="chunk", max_bytes=cfg.chunk_bytes) as writer:
        for cand, text, reason in ordered_map(load, cands, cfg.workers):
            if text is None:
                skipped[reason or "unknown"] += 1
                continue
            size = len(text.encode("utf-8"))
            if stats.bytes + size > stats.budget:
                # Pass over a document that does not fit; a run of them means the budget is full.
                misses += 1
                if misses >= cfg.fill_attempts:
                    break
                continue
            misses = 0
            writer.write({"text": text, "meta": {"source": name, "origin": cand.clean_origin}})
            stats.documents += 1
            stats.bytes += size
            bar.update(size)
    bar.close()
    stats.chunks = [p.name for p in writer.files]
    stats.skipped = dict(sorted(skipped.items()))
    return stats


def build(cfg: SampleConfig) -> dict:
    """Build the corpus at ``cfg.output``; returns the manifest."""
    output = Path(cfg.output)
    partial = output.with_name(output.name + ".partial")
    _check_replaceable(output)
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    roots = resolve_roots(cfg.input)
    walked: dict[Path, list[str]] = {}
    sources = {}
    for name, src in cfg.sources.items():
        if src.share > 0:
            sources[name] = build_source(name, src, cfg, roots, partial, walked)
    manifest = {
        "kind": MANIFEST_KIND,
        "format": "jsonl.zst",
        "renderer": {"man": "groff" if _GROFF else "builtin"},
        "sources": {name: _stats_dict(s) for name, s in sources.items()},
        "total": {
            "documents": sum(s.documents for s in sources.values()),
            "bytes": sum(s.bytes for s in sources.values()),
        },
        "config": to_dict(cfg),
    }
    _write_json_atomic(partial / MANIFEST, manifest)  # last: marks the corpus complete
    if output.exists():
        shutil.rmtree(output)
    os.replace(partial, output)
    return manifest


def _stats_dict(s: SourceStats) -> dict:
    return {
        "documents": s.documents,
        "bytes": s.bytes,
        "budget": s.budget,
        "candidates": s.candidates,
        "skipped": s.skipped,
        "chunks": s.chunks,
    }


def _check_replaceable(output: Path) -> None:
    """Only an earlier sample corpus (or an empty folder) may be replaced."""
    if not output.exists():
        return
    if not output.is_dir():
        raise SystemExit(f"output {output} exists and is not a folder")
    manifest = output / MANIFEST
    if not any(output.iterdir()):
        return
    try:
        if json.loads(manifest.read_text(encoding="utf-8")).get("kind") == MANIFEST_KIND:
            return
    except (OSError, ValueError):
        pass
    raise SystemExit(f"output {output} exists and is not a sample corpus built by this stage; not replacing it")


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def format_table(manifest: dict) -> str:
    rows = [("source", "documents", "MB", "budget MB", "skipped")]
    for name, s in sorted(manifest["sources"].items()):
        skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "-"
        rows.append((name, str(s["documents"]), f"{s['bytes'] / 1e6:.2f}", f"{s['budget'] / 1e6:.2f}", skipped))
    total = manifest["total"]
    rows.append(("total", str(total["documents"]), f"{total['bytes'] / 1e6:.2f}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in (1, 2, 3)] + [r[4]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cfg, _ = stage_cli(
        SampleConfig,
        "Build the sample corpus from text on this machine (Python sources, licenses, man pages, docs).",
        DEFAULT_CONFIG,
        argv,
        prog="python -m pipeline.corpus",
    )
    manifest = build(cfg)
    print(format_table(manifest))
    print(f"wrote {cfg.output}/ ({MANIFEST} last)")


if __name__ == "__main__":
    main()
