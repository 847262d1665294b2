"""End-to-end tests of ``make tokenize`` on a small real corpus (Ray job, shards, restart)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from common.config import load_config
from pipeline import split as splitting
from pipeline.shard_format import MANIFEST_NAME, check_metadata, read_metadata, shard_schema, split_dir
from pipeline.tokenize import TokenizeConfig, run
from pipeline.tokenizer import EOS_ID, Encoder, tokenizer_sha256
from tests.pipeline.test_tokenize_data import corpus_documents, write_corpus

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "data" / "tokenize.yaml"
SEQ_LENS = (256, 1024)
pytestmark = pytest.mark.slow


def tokenize(corpus: Path, output: Path, *overrides: str) -> dict:
    cfg = load_config(
        TokenizeConfig,
        CONFIG,
        [f"input={corpus}", f"output={output}", f"pack.seq_lens=[{SEQ_LENS[0]},{SEQ_LENS[1]}]",
         "split.validation_fraction=0.15", "split.test_fraction=0.1", "shards.max_bytes=400000",
         "shards.rows_per_batch=64", "run.progress=false", *overrides],
    )
    return run(cfg)


def shard_digests(output: Path) -> dict[str, str]:
    return {
        str(p.relative_to(output)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(output.glob("seq*/*/*")) if p.is_file()
    }


def read_rows(folder: Path) -> pa.Table:
    paths = sorted(folder.glob("shard-*.arrow"))
    return pa.concat_tables([pa.ipc.open_file(pa.memory_map(str(p))).read_all() for p in paths])


_IDS: dict[Path, list[list[int]]] = {}


def expected_streams(corpus: Path, weights: dict[str, float] | None = None) -> dict[str, list[tuple[str, list[int]]]]:
    """Independently recomputed: (source, ids + EOS) of every document each split keeps."""
    docs = corpus_documents(corpus)
    if corpus not in _IDS:  # encoding is the slow part; the corpus never changes
        _IDS[corpus] = Encoder("tokenizers").encode_ids([d.text for d in docs])
    ids = _IDS[corpus]
    split_of = [splitting.assign_split(d.id, 0, 0.15, 0.1) for d in docs]
    holdout = {splitting.text_sha256(d.text) for d, s in zip(docs, split_of) if s != splitting.TRAIN}
    streams: dict[str, list] = {"train": [], "validation": [], "test": []}
    for doc, s, doc_ids in zip(docs, split_of, ids):
        if s == splitting.TRAIN and splitting.text_sha256(doc.text) in holdout:
            continue
        copies = splitting.repeats(doc.id, doc.source, 0, weights or {}) if s == splitting.TRAIN else 1
        streams[splitting.SPLITS[s]] += [(doc.source, doc_ids + [EOS_ID])] * copies
    return streams


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("tokcorpus") / "corpus", max_files=90, chunk_bytes=250_000)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory, ray_session):
    output = tmp_path_factory.mktemp("tokref") / "tokens"
    report = tokenize(corpus, output, "run.batch_docs=64")
    return output, report


def test_writes_every_length_and_split_per_the_contract(reference):
    output, report = reference
    assert json.loads((output / MANIFEST_NAME).read_text())["complete"] is True
    assert not (output / "_work").exists()
    for L in SEQ_LENS:
        for split in ("train", "validation", "test"):
            folder = split_dir(output, L, split)
            manifest = json.loads((folder / MANIFEST_NAME).read_text())
            assert manifest["rows"] > 0 and manifest["shards"], f"{folder} is empty"
            for entry in manifest["shards"]:
                path = folder / entry["name"]
                assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
                assert path.stat().st_size == entry["bytes"] <= 400_000
                table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
                assert table.num_rows == entry["rows"]
                assert table.schema.equals(shard_schema(L))
                check_metadata(path, read_metadata(path), {
                    "format_version": 1, "tokenizer_sha256": tokenizer_sha256(), "seq_len": L,
                    "eos_id": EOS_ID, "vocab_size": 50257, "split": split,
                })
                config = json.loads(read_metadata(path)["config"])
                assert config["pack"]["seq_lens"] == list(SEQ_LENS) and "run" not in config
    assert not list(output.rglob("*.tmp"))


def test_token_accounting_per_split(reference, corpus):
    output, _ = reference
    streams = expected_streams(corpus)
    for split, docs in streams.items():
        expected_tokens = sum(len(t) for _, t in docs)
        for L in SEQ_LENS:
            folder = split_dir(output, L, split)
            manifest = json.loads((folder / MANIFEST_NAME).read_text())
            table = read_rows(folder)
            flat = np.asarray(table.column("input_ids").combine_chunks().values)
            # tokens in shards + reported remainder = per-document tokens + one EOS each
            assert len(flat) + manifest["remainder"]["tokens"] == expected_tokens, (split, L)
            assert manifest["documents"] == len(docs)
            assert int((flat == EOS_ID).sum()) + manifest["remainder"]["eos"] == len(docs)
            # the same tokens, not just the same count
            histogram = np.bincount(np.concatenate([t for _, t in docs]), minlength=EOS_ID + 1)
            assert (histogram - np.bincount(flat, minlength=EOS_ID + 1) >= 0).all()


def test_doc_starts_mark_document_beginnings(reference, corpus):
    output, _ = reference
    docs = [t for _, t in expected_streams(corpus)["train"]]
    by_head: dict[int, list] = {}
    for doc in docs:
        by_head.setdefault(doc[0], []).append(doc)
    table = read_rows(split_dir(output, SEQ_LENS[1], "train"))
    checked = 0
    for ids, starts in zip(table.column("input_ids").to_pylist(), table.column("doc_starts").to_pylist()):
        assert starts == sorted(set(starts)) and all(0 <= s < SEQ_LENS[1] for s in starts)
        for start in starts:
            # From a start to its EOS (or the row end) the row holds the beginning of a kept document.
            end = ids.index(EOS_ID, start) + 1 if EOS_ID in ids[start:] else len(ids)
            segment = ids[start:end]
            assert any(doc[: len(segment)] == segment for doc in by_head.get(segment[0], []))
            if start > 0:
                assert ids[start - 1] == EOS_ID  # the previous document ended right before
            checked += 1
    assert checked > 20


def test_decontamination_is_counted(reference, corpus):
    _, report = reference
    docs = corpus_documents(corpus)
    split_of = {d.id: splitting.assign_split(d.id, 0, 0.15, 0.1) for d in docs}
    holdout = {splitting.text_sha256(d.text) for d in docs if split_of[d.id] != splitting.TRAIN}
    removed = Counter(d.source for d in docs if split_of[d.id] == splitting.TRAIN and splitting.text_sha256(d.text) in holdout)
    assert sum(removed.values()) > 0  # the corpus has copies across files
    got = report["decontamination"]["removed_from_train"]
    assert {k: v["documents"] for k, v in got.items()} == dict(removed)
    assert report["rejected"] == {"copies: invalid JSON": 1}


def test_byte_identical_across_runs_block_sizes_and_encoders(reference, corpus, tmp_path):
    output, _ = reference
    again = tmp_path / "again"
    tokenize(corpus, again, "run.batch_docs=64", "run.encoder=tokenizers")
    assert shard_digests(again) == shard_digests(output)
    other = tmp_path / "other"
    encoder = "tiktoken" if _has("tiktoken") else "tokenizers"
    tokenize(corpus, other, "run.batch_docs=5", f"run.encoder={encoder}", "run.encode_threads=2")
    assert shard_digests(other) == shard_digests(output)


def test_shuffle_seed_reorders_the_same_rows(reference, corpus, tmp_path):
    output, _ = reference
    reseeded = tmp_path / "reseeded"
    tokenize(corpus, reseeded, "pack.shuffle_seed=1")
    folder = split_dir(output, SEQ_LENS[0], "train")
    a = read_rows(folder).column("input_ids").to_pylist()
    b = read_rows(split_dir(reseeded, SEQ_LENS[0], "train")).column("input_ids").to_pylist()
    assert a != b and sorted(map(tuple, a)) == sorted(map(tuple, b))


def test_source_weights_repeat_train_documents(corpus, tmp_path, ray_session):
    weights = {"RedPajamaBook": 2.5}
    report = tokenize(corpus, tmp_path / "weighted", "pack.source_weights={RedPajamaBook: 2.5}")
    streams = expected_streams(corpus, weights)
    book_tokens = sum(len(t) for s, t in streams["train"] if s == "RedPajamaBook")
    folder = report["folders"][f"seq{SEQ_LENS[0]}/train"]
    assert folder["document_tokens"] == sum(len(t) for _, t in streams["train"])
    assert folder["source_tokens"]["RedPajamaBook"] + folder["remainder"]["source_tokens"].get("RedPajamaBook", 0) == book_tokens


def test_rerun_after_a_crash_leaves_no_partial_or_duplicate_shards(reference, corpus, tmp_path):
    output, _ = reference
    crashed = tmp_path / "crashed"
    tokenize(corpus, crashed, "run.keep_work=true", "pack.seq_lens=[256,2048]", "shards.max_bytes=100000")
    # What a kill leaves behind: no stage manifest, a half-written shard and part file,
    # a part without its completion marker, and shards of a different configuration.
    (crashed / MANIFEST_NAME).unlink()
    folder = split_dir(crashed, SEQ_LENS[0], "train")
    (folder / "shard-00099.arrow.tmp").write_bytes(b"partial")
    (folder / MANIFEST_NAME).unlink()
    (crashed / "_work" / "encode" / "f000001.done.json").unlink()
    (crashed / "_work" / "encode" / "f000002.arrow.123.tmp").write_bytes(b"partial")
    report = tokenize(corpus, crashed)
    assert 0 < report["input_files_reused"] < report["input_files"]
    assert shard_digests(crashed) == shard_digests(output)
    assert not list(crashed.rglob("*.tmp")) and not (crashed / "_work").exists()


def test_killed_process_rerun_finishes_identically(reference, corpus, tmp_path):
    """A real SIGKILL of the CLI mid-run (its own 1-CPU Ray), then a re-run, against the reference."""
    output, _ = reference
    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "pipeline.tokenize", "--config", str(CONFIG), f"input={corpus}", f"output={killed}",
            f"pack.seq_lens=[{SEQ_LENS[0]},{SEQ_LENS[1]}]", "split.validation_fraction=0.15", "split.test_fraction=0.1",
            "shards.max_bytes=400000", "shards.rows_per_batch=64", "run.num_cpus=1", "run.batch_docs=16"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((killed / "_work" / "encode").glob("*.done.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and the Ray processes it started
    except ProcessLookupError:
        pass
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / MANIFEST_NAME).exists()
    # The re-run (on the tests' shared 2-CPU Ray) picks up what the killed run finished.
    report = tokenize(corpus, killed, "run.batch_docs=16")
    assert report["input_files_reused"] >= 1
    assert json.loads((killed / MANIFEST_NAME).read_text())["complete"] is True
    assert shard_digests(killed) == shard_digests(output)
    assert not list(killed.rglob("*.tmp"))
    _end_session(proc.pid)


def _end_session(sid: int) -> None:
    """Stop what is left of the killed run's Ray (processes of the session it led)."""
    import psutil

    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid:
                process.kill()
        except (OSError, psutil.Error):
            continue


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False
