"""Storage faults while reading a corpus are not bad input: an I/O error in the middle of
a file raises (the stage kernel retries the task; a file that keeps failing stops the
job naming it), while a file that vanished or is a dangling link is quarantined whole
and the job goes on, every line still accounted for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import pipeline.corpus_io as corpus_io
from pipeline.corpus_io import Document, InputReadError, Rejected, iter_file, list_source_files, read_corpus
from tests.pipeline.test_dedup import _config, _outputs, corpus  # noqa: F401  (corpus is a fixture)
from tests.pipeline.test_dedup_faults import _end_session, _start

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def bad_with_dangling_link(tmp_path) -> Path:
    root = tmp_path / "bad"
    shutil.copytree(DATA / "bad", root)
    (root / "web" / "dangling.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    return root


def test_a_dangling_link_is_quarantined_whole_and_reading_goes_on(bad_with_dangling_link):
    items = list(read_corpus(bad_with_dangling_link))
    missing = [i for i in items if i.id.startswith("web/dangling.jsonl")]
    assert len(missing) == 1 and isinstance(missing[0], Rejected)
    assert missing[0].line == 0 and "dangling link" in missing[0].reason
    expected = json.loads((DATA / "bad_expected.json").read_text(encoding="utf-8"))
    assert {i.id for i in items if isinstance(i, Document)} == set(expected["documents"])


def _file(root: Path, label: str):
    return next(sf for sf in list_source_files(root) if sf.label == label)


def test_a_read_error_mid_file_raises_naming_file_and_line(monkeypatch):
    sf = _file(DATA / "bad", "web/mixed.jsonl")
    first_lines = sf.path.read_bytes().split(b"\n")[:3]

    def failing_chunks(path):
        yield b"\n".join(first_lines) + b"\n"
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(corpus_io, "_plain_chunks", failing_chunks)
    items = iter_file(sf)
    read = [next(items) for _ in range(3)]  # lines before the fault come out as usual
    assert [i.id for i in read] == ["web/mixed.jsonl:1", "web/mixed.jsonl:2", "web/mixed.jsonl:3"]
    with pytest.raises(InputReadError, match=r"web/mixed.jsonl: read error after line 3: .*Input/output error"):
        next(items)


def test_a_parquet_read_error_raises_but_corrupt_parquet_is_quarantined(monkeypatch):
    sf = _file(DATA / "bad", "books/rows.parquet")

    class FailingFile(corpus_io._TrackedFile):
        """Reads fail once pyarrow has the footer and goes for the row data."""

        reads = 0

        def _fault(self):
            self.reads += 1
            if self.reads > 1:
                self.read_error = OSError(104, "Connection reset by peer")
                raise self.read_error

        def read(self, size=-1):
            self._fault()
            return super().read(size)

        def readinto(self, buffer):
            self._fault()
            return super().readinto(buffer)

    monkeypatch.setattr(corpus_io, "_TrackedFile", FailingFile)
    with pytest.raises(InputReadError, match="books/rows.parquet: read error after row 0"):
        list(iter_file(sf))
    monkeypatch.undo()
    corrupt = [i for i in iter_file(_file(DATA / "bad", "books/corrupt.parquet"))]
    assert len(corrupt) == 1 and isinstance(corrupt[0], Rejected) and "unreadable parquet" in corrupt[0].reason
    assert pq.ParquetFile(sf.path).metadata.num_rows == 4  # the fixture file itself is intact


@pytest.mark.slow
def test_dedup_of_a_corpus_with_a_dangling_link_accounts_for_every_line(ray_session, bad_with_dangling_link, tmp_path):
    from pipeline.dedup import run

    out = tmp_path / "out"
    run(_config(bad_with_dangling_link, out))
    ledger = pq.read_table(out / "ledger.parquet").to_pylist()
    items = list(read_corpus(bad_with_dangling_link))
    assert sorted(row["id"] for row in ledger) == sorted(i.id for i in items)
    quarantine = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert ("web/dangling.jsonl", 0) in {(q["file"], q["line"]) for q in quarantine}


@pytest.mark.slow
def test_a_transient_read_error_mid_file_is_retried_to_identical_outputs(ray_session, corpus, tmp_path):  # noqa: F811
    from pipeline.dedup import run

    root, _ = corpus
    out = tmp_path / "out"  # the manifest names its output folder, so both runs write here
    run(_config(root, out))
    expected = _outputs(out)
    shutil.rmtree(out)
    marker = tmp_path / "fault-fired"
    job = _start(root, out, f"pipeline.corpus_io:_zstd_chunks:fail_once={marker}")
    try:
        _, stderr = job.communicate(timeout=300)
    finally:
        _end_session(job)
    assert job.returncode == 0, stderr[-3000:]
    assert marker.exists(), "the injected fault never fired"
    assert _outputs(out) == expected
