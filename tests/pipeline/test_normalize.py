"""normalize_text is byte-identical to ftfy.fix_text(text, normalization="NFC");
clean_text is SlimPajama's clean()."""

from __future__ import annotations

import glob
import gzip
import html
import random
import re
import shutil
import subprocess
import sysconfig
import unicodedata
from pathlib import Path

import ftfy
import pytest

from pipeline import normalize
from pipeline.normalize import clean_text, normalize_text


def reference(text: str) -> str:
    return ftfy.fix_text(text, normalization="NFC")


def _decode(data: bytes) -> str:
    # Files that are not UTF-8 are decoded as Latin-1: real-world mojibake sources.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _pick(paths: list[str], max_bytes: int, max_doc: int = 150_000) -> list[str]:
    """Documents from an evenly spread subset of ``paths``, up to ``max_bytes``."""
    docs, total = [], 0
    step = max(1, len(paths) // 400)
    for path in paths[::step]:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        if not data or len(data) > max_doc:
            continue
        docs.append(_decode(data))
        total += len(data)
        if total >= max_bytes:
            break
    return docs


def _rendered_man_pages(limit: int) -> list[str]:
    """Man pages rendered by groff: overstrike backspaces and terminal escapes."""
    groff = shutil.which("groff")
    pages = sorted(glob.glob("/usr/share/man/man1/*.gz"))[::97][:limit]
    out = []
    for page in pages if groff else []:
        try:
            src = gzip.decompress(Path(page).read_bytes())
            run = subprocess.run([groff, "-man", "-Tutf8"], input=src, capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if run.returncode == 0 and run.stdout:
            out.append(_decode(run.stdout))
    return out


def _adversarial_variants(docs: list[str]) -> list[str]:
    """Real documents damaged the ways ftfy repairs (and ways it must not touch)."""
    rng = random.Random(0)
    nonascii = [d for d in docs if not d.isascii()]
    sample = rng.sample(docs, min(60, len(docs)))
    out = []
    for i, doc in enumerate(sample):
        doc = doc[:20_000]
        lines = doc.split("\n")
        k = rng.randrange(len(lines))
        edits = [
            doc.replace('"', "\u201c", 3).replace("'", "\u2019", 5),
            doc.replace("fi", "\ufb01").replace("ff", "\ufb00"),
            "\n".join(l if j % 7 else l.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)}) for j, l in enumerate(lines)),
            html.escape(doc, quote=True),
            html.escape(doc[: len(doc) // 2]) + doc[len(doc) // 2 :],
            "&eacute;&#x2019;&amp;\n" + doc + "\n&hellip;",
            doc.replace("\n", "\r\n"),
            doc.replace("\n", "\r"),
            doc.replace("\n", "\u2028", 3),
            unicodedata.normalize("NFD", "Caf\u00e9 na\u00efve r\u00e9sum\u00e9\n" + doc),
            "\n".join(lines[:k] + ["\x1b[1;31m" + lines[k] + "\x1b[0m"] + lines[k + 1 :]),
            "\ufeff" + doc.replace(" ", "\x00", 2).replace("e", "\x07", 1),
            doc + "\ud83d\ude00 \udc80 end",
            doc.replace(".", "\x85", 2).replace(",", "\x93", 2),
            "\n".join(lines[:k] + ["\u00c3 la mode", "\u00c2 \u00e2\u20ac\u201d"] + lines[k:]),
            doc.encode("utf-8", "surrogatepass").decode("latin-1"),
            ("sch\u00f6n \u201cquoted\u201d caf\u00e9\n" + doc).encode("utf-8").decode("cp1252", "replace"),
        ]
        out.append(edits[i % len(edits)])
        out.append(edits[(i * 7 + 3) % len(edits)])
    for doc in nonascii[:40]:
        out.append(doc.encode("utf-8", "surrogatepass").decode("cp1252", "replace"))
        out.append(unicodedata.normalize("NFD", doc))
    return out


@pytest.fixture(scope="module")
def real_documents() -> list[str]:
    stdlib = sysconfig.get_paths()["stdlib"]
    docs = _pick(sorted(glob.glob(f"{stdlib}/**/*.py", recursive=True)), 2_000_000)
    docs += _pick(sorted(glob.glob("/usr/share/common-licenses/*")), 400_000)
    docs += _pick(sorted(glob.glob("/usr/share/doc/*/copyright")), 1_200_000)
    docs += _pick(sorted(glob.glob("/usr/share/man/man*/*.gz")), 600_000)
    docs += _rendered_man_pages(12)
    assert len(docs) >= 300, "too few real documents found on this machine"
    return docs


def test_identical_to_ftfy_on_real_corpus(real_documents, monkeypatch):
    expected = [reference(doc) for doc in real_documents]
    calls = []
    ftfy_segment = ftfy.fix_and_explain
    monkeypatch.setattr(normalize.ftfy, "fix_and_explain", lambda *a, **k: calls.append(1) or ftfy_segment(*a, **k))
    used_ftfy = 0
    for doc, want in zip(real_documents, expected):
        calls.clear()
        assert normalize_text(doc) == want, repr(doc[:200])
        used_ftfy += bool(calls)
    # The fast path must carry the load: ftfy itself ran on few documents.
    assert used_ftfy < 0.1 * len(real_documents)


def test_identical_to_ftfy_on_damaged_real_text(real_documents):
    damaged = _adversarial_variants(real_documents)
    assert len(damaged) >= 150
    changed = 0
    for doc in damaged:
        expected = reference(doc)
        assert normalize_text(doc) == expected, repr(doc[:200])
        changed += expected != doc
    assert changed > 0.8 * len(damaged)  # the damage is real: ftfy repairs it


ADVERSARIAL = [
    "",
    "\n",
    "\n\n\u00c3 la\n",
    "\u00c3 la mode",
    "\u00e2\u0153\u201d No problems",
    "&macr;\\_(\u00e3\x83\x84)_/&macr;",
    "Broken text&hellip; it&#x2019;s \ufb02ubberi\ufb01c!",
    "\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33",
    "x &amp; y\n<p>\n&lt;",  # entities before the first "<" only
    "&amp;<\n&amp;",
    "a &amp b &#39 &#x27; &NTILDE; &nTILDE; &#12345678901;",
    "\x1b[36;44mI'm blue\x1b[0m",
    "\ud83d\udca9 and \udca9\ud83d",
    "\u201chere\u2019s a test\u201d \u02bc",
    "a\r\nb\rc\u2028d\u2029e\x85f",
    "e\u0301\n\u0301x\n\u1100\u1161",
    "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m \u212b",
    "\u0432\u0402\u045a\u0432\u0402\u045c \u0412\u0402\u045a",  # cp1251 mojibake
    "\u00c3\u00a9t\u00c3\u00a9 \u00c3\u00a0 Paris",
    "P&EACUTE;REZ BUNDESSTRA&SZLIG;E",
    "\ufeffBOM \x00\x07\x7f\ufffc\u206a text",
    "\x80\x81\x9f C1 controls",
    "\u00c2\u00a0nbsp mojibake \u00c2 \u00c2",
    "\u00e2\u20ac\u0153quoted\u00e2\u20ac\ufffd and \u00e2\u20ac\u2122s",
    "sch\u00c3\u00b6n " * 50,
    "\u00d8\u00b3\u00d9\u201e\u00d8\u00a7\u00d9\u2026 Arabic mojibake",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\uff08\u5168\u89d2\uff09",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_identical_to_ftfy_on_adversarial_strings(text):
    assert normalize_text(text) == reference(text)


def test_lines_longer_than_ftfy_segments():
    # ftfy cuts lines longer than max_decode_length into separate segments.
    size = normalize._MAX_SEGMENT
    mojibake = "sch\u00c3\u00b6n \u00e2\u20ac\u0153x\u00e2\u20ac\ufffd "
    text = "a" * (size - 3) + mojibake + "b" * 100 + "\nend &amp; \ufb01\n"
    assert normalize_text(text) == reference(text)


def test_clean_text_skips_ftfy(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("ftfy should not run on clean text")

    # The installed ftfy is one the fast path understands, with its mojibake regex
    # reduced to trigger characters (otherwise every document would be slow).
    assert normalize._FAST_PATH_VALID and normalize._TRIGGERS is not None
    monkeypatch.setattr(normalize.ftfy, "fix_and_explain", forbidden)
    clean = "def f(x):\n    return x & 1  # caf\u00e9, na\u00efve \u65e5\u672c\n" * 50
    assert normalize_text(clean) == clean
    # Curly quotes and CRLF are fixed without ftfy, by ftfy's own fixer functions.
    assert normalize_text("It\u2019s \u201cfine\u201d\r\n") == "It's \"fine\"\n"


def slimpajama_clean(text: str) -> str:
    """SlimPajama's clean(), written the way its preprocessing code does it."""
    import string

    text = text.lower()
    text = text.translate(str.maketrans("", "", string.punctuation))
    return re.sub(r"\s+", " ", text.strip())


def test_clean_text_matches_slimpajama(real_documents):
    extra = [
        "",
        "  Hello,   World!!  ",
        "Tabs\tand\nnewlines\r\n\x0b\x0c and \u00a0nbsp \u2003em \u3000ideographic \x1c\x1d\x1e\x1f",
        "\u0130stanbul \u212a\u00c5 \u00df \u03a3\u039f\u03a3",  # lowercasing that changes length
        "caf\u00e9 \u201cquotes\u201d stay \u2014 dashes stay",
        "\ud800 lone surrogate",
    ]
    for text in real_documents[:400] + extra:
        assert clean_text(text) == slimpajama_clean(text)
    assert clean_text("  A-B_C, d!  e ") == "abc d e"
