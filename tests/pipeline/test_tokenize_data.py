"""A small real corpus for the tokenize tests: Python's standard library and license texts.

Written in SlimPajama's layout (one sub-folder per source, ``.jsonl.zst`` chunks via
ChunkWriter), with a few exact copies across files so decontamination has work to do,
a document containing a literal ``<|endoftext|>`` and one malformed record.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

from pipeline.corpus_io import Document, list_source_files, read_corpus
from pipeline.corpus_write import ChunkWriter

LICENSES = Path("/usr/share/common-licenses")


def real_texts(max_files: int, max_bytes: int = 60_000) -> tuple[list[str], list[str]]:
    """(code texts, license texts) read from this interpreter's stdlib and the OS licenses."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = []
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if 200 <= len(text.encode()) <= max_bytes:
            code.append(text)
        if len(code) >= max_files:
            break
    licenses = []
    if LICENSES.is_dir():
        for path in sorted(p for p in LICENSES.iterdir() if p.is_file()):
            licenses.append(path.read_text(encoding="utf-8", errors="replace")[:max_bytes])
    if len(licenses) < 5:  # a system without /usr/share/common-licenses: use prose from the stdlib docs
        licenses += [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("**/*.txt"))[:20]]
    return code, licenses


def write_corpus(root: Path, max_files: int = 120, chunk_bytes: int = 400_000) -> Path:
    code, licenses = real_texts(max_files)
    with ChunkWriter(root / "code", max_bytes=chunk_bytes) as writer:
        for text in code:
            writer.write({"text": text, "meta": {"redpajama_set_name": "RedPajamaGithub"}})
    with ChunkWriter(root / "licenses", max_bytes=chunk_bytes) as writer:
        for text in licenses:
            writer.write({"text": text, "meta": {"redpajama_set_name": "RedPajamaBook"}})
        writer.write({"text": "A document that mentions <|endoftext|> in its text.", "meta": {"redpajama_set_name": "RedPajamaBook"}})
    # Exact copies of earlier documents under other ids (and one malformed record).
    copies = root / "copies"
    copies.mkdir(parents=True)
    lines = [json.dumps({"text": t, "meta": {"redpajama_set_name": "RedPajamaGithub"}}) for t in code[:: max(1, len(code) // 30)]]
    lines.insert(3, "{not json")
    (copies / "copies.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def corpus_documents(root: Path) -> list[Document]:
    return [d for d in read_corpus(root) if isinstance(d, Document)]


def test_corpus_is_real_and_shaped(tmp_path):
    root = write_corpus(tmp_path / "corpus", max_files=20)
    files = list_source_files(root)
    assert {f.folder for f in files} == {"code", "licenses", "copies"}
    docs = corpus_documents(root)
    assert any("def " in d.text for d in docs) and any("License" in d.text or "LICENSE" in d.text for d in docs)
    assert len({d.id for d in docs}) == len(docs)
