"""Reading a file as one document: plain text, man pages (groff) and GNU info files."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from pipeline.sample.find import Candidate


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
GROFF = shutil.which("groff")


def render_man(path: Path, max_bytes: int) -> str:
    source = read_bytes(path, 4 * max_bytes)
    if len(source) > 4 * max_bytes:
        raise Skip("oversize")
    if b"\x00" in source:
        raise Skip("binary")
    if source.lstrip().startswith(b".so ") and source.count(b"\n") <= 2:
        raise Skip("alias")  # a one-line redirect to another page
    text = _groff(source) if GROFF else _strip_roff(decode_text(source))
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"
    if len(text.encode("utf-8")) > max_bytes:
        raise Skip("oversize")
    return text


def _groff(source: bytes) -> str:
    env = dict(os.environ, LC_ALL="C.UTF-8", SOURCE_DATE_EPOCH="0")
    cmd = [GROFF, "-man", "-Tutf8", "-P-cbou", "-rLL=80n"]
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
