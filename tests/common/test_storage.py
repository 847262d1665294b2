"""The storage seam on a local disk (today's bytes and temporary names), on a real S3
server (moto on 127.0.0.1), with and without a proxy that fails requests on purpose, and
on a real GCS server (fake-gcs-server on 127.0.0.1)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common import atomic
from common.config import load_config, to_dict, to_json
from common.storage import Location, StorageConfig, is_url, location, sweep_temporaries
from tests.helpers.s3_proxy import S3Proxy


@pytest.fixture
def via_proxy(s3_server, monkeypatch):
    """Route the seam through a proxy; the test sets its fault rate."""
    proxy = S3Proxy(s3_server.endpoint).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    yield proxy
    proxy.stop()


# --- naming -----------------------------------------------------------------------------


def test_locations_of_paths_and_urls():
    assert str(location("s3://bucket/a/b/")) == "s3://bucket/a/b"
    loc = location("s3://bucket/a") / "b/c.json"
    assert (str(loc), loc.name, str(loc.parent), loc.is_local, loc.local_path) == (
        "s3://bucket/a/b/c.json", "c.json", "s3://bucket/a/b", False, None)
    assert location("file:///tmp/x/y").local_path == Path("/tmp/x/y")
    assert location("rel/dir").is_local and str(location("rel/dir") / "f") == "rel/dir/f"
    assert (location("s3://bucket/a") / "b/c").relative_to(location("s3://bucket/a")) == "b/c"
    assert is_url("s3://b/k") and is_url("gs://b/k") and not is_url("/x") and not is_url("file:///x")
    with pytest.raises(ValueError, match="unsupported storage URL"):
        location("ftp://host/x")


# --- local disk: today's behaviour --------------------------------------------------------


def test_local_writes_use_the_temporary_name_rule_and_leave_nothing_on_error(tmp_path):
    target = location(tmp_path / "sub" / "out.bin")
    seen = []
    with target.open_write() as fh:
        fh.write(b"abc")
        seen = sorted(p.name for p in (tmp_path / "sub").iterdir())
    assert seen == [f"out.bin.{os.getpid()}.tmp"]
    assert (tmp_path / "sub" / "out.bin").read_bytes() == b"abc"
    with pytest.raises(RuntimeError):
        with location(tmp_path / "sub" / "never.bin").open_write() as fh:
            fh.write(b"half")
            raise RuntimeError("writer died")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["out.bin"]


def test_common_atomic_and_the_seam_write_the_same_bytes(tmp_path):
    data = {"b": [1, 2], "a": "ü"}
    atomic.write_json(tmp_path / "one.json", data)
    location(tmp_path / "two.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    assert atomic.write_json(tmp_path / "three.json", data) == tmp_path / "three.json"


def test_local_listing_facts_and_sweep(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_bytes(b"12")
    (tmp_path / "d" / "e" / "a.txt").write_bytes(b"1")
    (tmp_path / "d" / f"c.txt.{os.getpid()}.tmp").write_bytes(b"partial")
    root = location(tmp_path / "d")
    assert [f.relative_to(root) for f in root.list_files(suffixes=[".txt"])] == ["b.txt", "e/a.txt"]
    assert root.is_dir() and (root / "b.txt").is_file() and (root / "b.txt").info().size == 2
    sweep_temporaries(root)
    assert not (tmp_path / "d" / f"c.txt.{os.getpid()}.tmp").exists()
    root.remove_tree()
    assert not root.exists()
    root.remove_tree()  # missing is fine


# --- S3 and GCS ----------------------------------------------------------------------------


def test_object_store_round_trip(store_bucket, tmp_path):
    root = location(store_bucket) / "run"
    (root / "a" / "x.json").write_text('{"x": 1}\n')
    with (root / "b.bin").open_write() as fh:
        fh.write(b"\x00" * 10_000)
    assert (root / "a" / "x.json").read_text() == '{"x": 1}\n'
    assert (root / "b.bin").info().size == 10_000 and (root / "b.bin").info().mtime_ns
    assert [f.relative_to(root) for f in root.list_files()] == ["a/x.json", "b.bin"]
    assert [f.relative_to(root) for f in root.list_files(recursive=False)] == ["b.bin"]
    assert root.is_dir() and (root / "a").is_dir() and not (root / "b.bin").is_dir()
    reader = (root / "b.bin").open_random()
    assert reader.size() == 10_000 and reader.read_at(4, 100) == b"\x00" * 4
    (root / "b.bin").copy_to(root / "c.bin")
    assert (root / "c.bin").read_bytes() == b"\x00" * 10_000
    local = (root / "c.bin").fetch(tmp_path / "cache")
    assert local.read_bytes() == b"\x00" * 10_000 and (root / "c.bin").fetch(tmp_path / "cache") == local
    location(tmp_path / "up.txt").write_text("up")
    location(tmp_path / "up.txt").copy_to(root / "up.txt")
    assert (root / "up.txt").read_text() == "up"
    root.remove_tree()
    assert root.list_files() == [] and not root.exists()


def test_s3_objects_hold_the_bytes_given_whatever_their_name(s3_bucket, s3_server, tmp_path):
    """Another S3 client sees exactly the bytes the seam wrote, and the seam reads exactly
    the bytes another client stored: a ``.zst`` or ``.gz`` name is not (de)compressed on
    the way (pyarrow's streams would, by default)."""
    import boto3
    import zstandard

    client = boto3.client("s3", endpoint_url=s3_server.endpoint)
    bucket = s3_bucket.removeprefix("s3://")
    frame = zstandard.ZstdCompressor().compress(b'{"text": "a document"}\n' * 100)
    root = location(s3_bucket)
    (root / "written.jsonl.zst").write_bytes(frame)
    location(tmp_path / "local.jsonl.gz").write_bytes(frame)
    location(tmp_path / "local.jsonl.gz").copy_to(root / "uploaded.jsonl.gz")
    for key in ("written.jsonl.zst", "uploaded.jsonl.gz"):
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == frame, key
    client.put_object(Bucket=bucket, Key="theirs.jsonl.zst", Body=frame)
    theirs = root / "theirs.jsonl.zst"
    with theirs.open_read() as fh:
        assert theirs.read_bytes() == frame and fh.read() == frame
    assert theirs.fetch(tmp_path / "cache").read_bytes() == frame


def test_gcs_objects_hold_the_bytes_given_whatever_their_name(gcs_bucket, gcs_server):
    """The server's JSON API (any other client) gives exactly the bytes the seam wrote."""
    import zstandard

    frame = zstandard.ZstdCompressor().compress(b'{"text": "a document"}\n' * 100)
    (location(gcs_bucket) / "written.jsonl.zst").write_bytes(frame)
    assert gcs_server.object_bytes(f"{gcs_bucket}/written.jsonl.zst") == frame


def test_missing_objects_are_file_not_found(store_bucket):
    missing = location(store_bucket) / "nothing.jsonl"
    assert not missing.exists() and not missing.is_file()
    for call in (missing.read_bytes, missing.info, missing.open_read):
        with pytest.raises(FileNotFoundError):
            call()
    missing.remove()  # missing is fine
    assert (location(store_bucket) / "no-prefix").list_files() == []
    (location(store_bucket) / "no-prefix").remove_tree()  # missing is fine


def test_a_writer_that_fails_leaves_no_object(store_bucket):
    target = location(store_bucket) / "out.bin"
    with pytest.raises(RuntimeError):
        with target.open_write() as fh:
            fh.write(b"x" * 1000)
            raise RuntimeError("writer died")
    assert not target.exists()


def test_s3_transient_faults_are_retried_and_a_cut_stream_resumes_at_its_offset(s3_bucket, via_proxy):
    root = location(s3_bucket) / "faults"
    payload = bytes(range(256)) * 4096  # 1 MiB
    (root / "big.bin").write_bytes(payload)
    via_proxy.fail_one_in = 4
    for i in range(20):
        (root / f"f{i}.txt").write_text(f"file {i}")
    assert [(root / f"f{i}.txt").read_text() for i in range(20)] == [f"file {i}" for i in range(20)]
    with (root / "big.bin").open_read() as fh:
        got = b"".join(iter(lambda: fh.read(100_000), b""))
    assert got == payload
    assert len(root.list_files()) == 21
    assert sum(via_proxy.failed.values()) >= 5 and set(via_proxy.failed) <= {"503", "reset", "cut"}


def test_s3_a_store_that_keeps_failing_raises_an_os_error(s3_bucket, via_proxy):
    (location(s3_bucket) / "x.txt").write_text("x")
    via_proxy.fail_one_in, via_proxy.faults = 1, ("503",)
    with pytest.raises(OSError) as info:  # one request per attempt: the seam's own retries only
        location(f"{s3_bucket}/x.txt", StorageConfig(request_attempts=1)).read_bytes()
    assert not isinstance(info.value, FileNotFoundError)


def test_requests_are_counted_by_method(s3_bucket, via_proxy):
    via_proxy.reset_counts()
    (location(s3_bucket) / "k").write_bytes(b"v")
    (location(s3_bucket) / "k").read_bytes()
    counts = via_proxy.reset_counts()
    assert counts.get("PUT", 0) >= 1 and counts.get("GET", 0) >= 1


# --- settings -----------------------------------------------------------------------------


@dataclass
class WithStorage:
    output: str = "s3://bucket/out"
    storage: StorageConfig = field(default_factory=StorageConfig)


def test_secret_storage_fields_never_reach_printed_configs(tmp_path):
    cfg = load_config(WithStorage, None, ["storage.access_key_id=AKIDSECRET", "storage.secret_access_key=s3cr3t",
                                          "storage.endpoint_url=http://127.0.0.1:9"])
    assert cfg.storage.secret_access_key == "s3cr3t"
    for text in (to_json(cfg), json.dumps(to_dict(cfg)), repr(cfg), repr(location("s3://b/k", cfg.storage))):
        assert "s3cr3t" not in text and "AKIDSECRET" not in text
    assert to_dict(cfg)["storage"]["endpoint_url"] == "http://127.0.0.1:9"


def test_a_storage_section_reaches_the_server_it_names(s3_bucket, s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    cfg = StorageConfig(endpoint_url=s3_server.endpoint, access_key_id="testing", secret_access_key="testing")
    loc = location(f"{s3_bucket}/cfg.txt", cfg)
    loc.write_text("via config")
    assert loc.read_text() == "via config" and isinstance(loc / "x", Location) and (loc / "x").cfg == cfg
