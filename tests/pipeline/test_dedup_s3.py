"""The dedup stage with input and output on a real S3 server (moto on 127.0.0.1): the
local disk's bytes, a resumed run, one request in 20 failing, an unreadable file, and
the bad-input corpus with a file that vanished after it was listed.

The server starts before the session's Ray (``ray_session`` depends on ``s3_server``), so
the workers inherit its endpoint and credentials; a test that routes a job through the
fault proxy names the proxy in the job's ``storage.endpoint_url``, which reaches the
workers with the configuration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from common.storage import location
from pipeline.corpus_io import read_corpus
from tests.helpers.interrupt import interrupted_after
from tests.helpers.s3_proxy import S3Proxy
from tests.pipeline.test_dedup import _config, _outputs, corpus  # noqa: F401  (corpus is a fixture)

DATA = Path(__file__).resolve().parents[1] / "data"
MANIFEST_PATH_KEYS = ("input", "config.input", "config.output")  # where the manifest names its locations
pytestmark = pytest.mark.slow


def upload_tree(root: Path, url: str) -> str:
    """Copy a local folder's files (not dangling links) to ``url``; returns ``url``."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            (location(url) / path.relative_to(root).as_posix()).write_bytes(path.read_bytes())
    return url


def store_outputs(url: str) -> dict[str, bytes]:
    """Every published object (not the work folder), by relative name, like ``_outputs``."""
    root = location(url)
    return {f.relative_to(root): f.read_bytes() for f in root.list_files()
            if not f.relative_to(root).startswith("_work/")}


def without_locations(manifest: bytes) -> dict:
    data = json.loads(manifest)
    for key in MANIFEST_PATH_KEYS:
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node.pop(last)
    return data


def assert_same_outputs(remote: dict[str, bytes], local: dict[str, bytes]) -> None:
    assert sorted(remote) == sorted(local)
    differ = [name for name in local if remote[name] != local[name]]
    assert differ == ["manifest.json"], differ  # only the manifest names the locations
    assert without_locations(remote["manifest.json"]) == without_locations(local["manifest.json"])


@pytest.fixture(scope="module")
def local_run(corpus, tmp_path_factory, ray_session):  # noqa: F811
    from pipeline.dedup import run

    root, _ = corpus
    out = tmp_path_factory.mktemp("local") / "out"
    report = run(_config(root, out))
    return _outputs(out), report


@pytest.fixture(scope="module")
def s3_corpus(corpus, s3_server) -> str:  # noqa: F811
    return upload_tree(corpus[0], f"{s3_server.create_bucket()}/corpus")


@pytest.fixture
def proxy(s3_server):
    with S3Proxy(s3_server.endpoint, fail_one_in=0, seed=20) as p:
        yield p


def test_dedup_on_s3_gives_the_local_bytes(local_run, s3_corpus, s3_bucket):
    from pipeline.dedup import run

    expected, report = local_run
    out = f"{s3_bucket}/out"
    assert run(_config(s3_corpus, out)) == report
    assert_same_outputs(store_outputs(out), expected)
    assert (location(out) / "_work" / "write" / "DONE").is_file()  # records and markers live on the store too
    assert run(_config(s3_corpus, out)) == report  # complete: found by its manifest, not run again


def test_an_interrupted_run_on_s3_resumes_to_identical_outputs(local_run, s3_corpus, s3_bucket):
    from pipeline.dedup import run

    out = f"{s3_bucket}/out"
    with interrupted_after("lsh"):
        run(_config(s3_corpus, out))
    assert not (location(out) / "manifest.json").exists()
    assert (location(out) / "_work" / "lsh" / "DONE").is_file()
    run(_config(s3_corpus, out))
    assert_same_outputs(store_outputs(out), local_run[0])


def test_one_request_in_20_failing_changes_nothing(local_run, s3_corpus, s3_bucket, proxy):
    from pipeline.dedup import run

    expected, report = local_run
    out = f"{s3_bucket}/out"
    proxy.fail_one_in = 20
    got = run(_config(s3_corpus, out, **{"storage.endpoint_url": proxy.endpoint}))
    assert sum(proxy.failed.values()) >= 10, proxy.failed  # the faults really happened
    assert got == report and got["total"]["docs_in"] == report["total"]["docs_in"]  # 0 documents lost
    proxy.fail_one_in = 0
    assert_same_outputs(store_outputs(out), expected)


def test_a_file_that_cannot_be_read_stops_the_job_naming_it(corpus, s3_corpus, s3_bucket, proxy, ray_session):  # noqa: F811
    from pipeline.dedup import run
    from pipeline.kernel import TaskFailed

    root, _ = corpus
    victim = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jsonl*"))[0]
    proxy.broken = (victim,)
    cfg = _config(s3_corpus, f"{s3_bucket}/out", **{"storage.endpoint_url": proxy.endpoint,
                                                     "storage.request_attempts": 1, "run.retries": 1})
    with pytest.raises(TaskFailed, match=rf"step 'prepare'.*\({victim}\).*failed"):
        run(cfg)
    assert proxy.failed["broken"] >= 2
    assert not (location(f"{s3_bucket}/out") / "manifest.json").exists()


def test_the_bad_corpus_on_s3_accounts_for_every_line(s3_bucket, proxy, tmp_path, ray_session):
    from pipeline.dedup import run

    local = tmp_path / "bad"
    shutil.copytree(DATA / "bad", local)
    (local / "web" / "vanished.jsonl").write_text('{"text": "listed, then deleted"}\n')
    url = upload_tree(local, f"{s3_bucket}/bad")
    (local / "web" / "vanished.jsonl").unlink()
    proxy.vanished = ("bad/web/vanished.jsonl",)  # listed by the store, then gone
    out = f"{s3_bucket}/out"
    run(_config(url, out, **{"storage.endpoint_url": proxy.endpoint}))
    ledger = pq.ParquetFile((location(out) / "ledger.parquet").open_random()).read()
    ids = sorted(row["id"] for row in ledger.to_pylist())
    expected = sorted([i.id for i in read_corpus(local)] + ["web/vanished.jsonl:0"])
    assert ids == expected
    quarantine = [json.loads(line) for line in (location(out) / "quarantine.jsonl").read_text().splitlines()]
    missing = [q for q in quarantine if q["file"] == "web/vanished.jsonl"]
    assert len(missing) == 1 and missing[0]["line"] == 0 and "missing file" in missing[0]["reason"]
    bad_expected = json.loads((DATA / "bad_expected.json").read_text(encoding="utf-8"))
    assert len(quarantine) == len(bad_expected["rejected"]) + 1
