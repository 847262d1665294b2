"""The dedup stage with input and output on a real S3 server (moto on 127.0.0.1): the
local disk's bytes, a resumed run, one request in 20 failing, an unreadable file, and
the bad-input corpus with a file that vanished after it was listed.

The server starts before the session's Ray (``ray_session`` depends on ``s3_server``), so
the workers inherit its endpoint and credentials; a test that routes a job through the
fault proxy names the proxy in the job's ``storage.endpoint_url``, which reaches the
workers with the configuration."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from common.storage import location
from pipeline.corpus_io import read_corpus
from tests.helpers.interrupt import interrupted_after
from tests.helpers.s3_proxy import S3Proxy
from tests.pipeline.test_dedup import _config, _outputs, corpus  # noqa: F401  (corpus is a fixture)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
MANIFEST_PATH_KEYS = ("input", "config.input", "config.output", "config.reference")  # the locations it names
ON_STORE = {"run.work_dir": "output"}  # the work folder on the store, as on a cluster
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
    """On one machine (the session's embedded Ray) the work folder stays on the local disk:
    the store receives only the published outputs."""
    from pipeline.dedup import run
    from pipeline.kernel.stage import work_location

    expected, report = local_run
    out = f"{s3_bucket}/out"
    assert run(_config(s3_corpus, out)) == report
    assert_same_outputs(store_outputs(out), expected)
    assert not (location(out) / "_work").is_dir()
    work = work_location("dedup", location(out))
    assert work.is_local and (work / "write" / "DONE").is_file()
    assert run(_config(s3_corpus, out)) == report  # complete: found by its manifest, not run again


def test_dedup_with_its_work_folder_on_s3_gives_the_local_bytes(local_run, s3_corpus, s3_bucket):
    """run.work_dir=output: what a cluster with no shared disk does, every step's files,
    records and markers on the store."""
    from pipeline.dedup import run

    expected, report = local_run
    out = f"{s3_bucket}/out"
    assert run(_config(s3_corpus, out, **ON_STORE)) == report
    assert_same_outputs(store_outputs(out), expected)
    assert (location(out) / "_work" / "write" / "DONE").is_file()
    assert run(_config(s3_corpus, out, **ON_STORE)) == report


def test_dedup_on_gcs_with_its_work_folder_there_gives_the_local_bytes(local_run, corpus, gcs_server, gcs_bucket):  # noqa: F811
    """``gs://`` through the same seam: input, output and every step's files on the GCS server."""
    from pipeline.dedup import run

    expected, report = local_run
    out = f"{gcs_bucket}/out"
    assert run(_config(upload_tree(corpus[0], f"{gcs_server.create_bucket()}/corpus"), out, **ON_STORE)) == report
    assert_same_outputs(store_outputs(out), expected)


def test_an_interrupted_run_on_s3_resumes_to_identical_outputs(local_run, s3_corpus, s3_bucket):
    from pipeline.dedup import run

    out = f"{s3_bucket}/out"
    with interrupted_after("lsh"):
        run(_config(s3_corpus, out, **ON_STORE))
    assert not (location(out) / "manifest.json").exists()
    assert (location(out) / "_work" / "lsh" / "DONE").is_file()
    run(_config(s3_corpus, out, **ON_STORE))
    assert_same_outputs(store_outputs(out), local_run[0])


def test_one_request_in_20_failing_changes_nothing(local_run, s3_corpus, s3_bucket, proxy):
    from pipeline.dedup import run

    expected, report = local_run
    out = f"{s3_bucket}/out"
    proxy.fail_one_in = 20
    got = run(_config(s3_corpus, out, **{"storage.endpoint_url": proxy.endpoint}, **ON_STORE))
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


def test_a_job_killed_mid_run_on_s3_resumes_to_identical_outputs(local_run, s3_corpus, s3_bucket):
    """``python -m pipeline.dedup`` in its own process (and its own Ray), killed with its
    workers once prepare has finished, then run again: the local disk's bytes."""
    from tests.pipeline.test_dedup_faults import _end_session

    out = f"{s3_bucket}/out"
    args = ["--config", "configs/data/slimpajama.yaml", f"input={s3_corpus}", f"output={out}",
            "run.progress=false", "run.partitions=4", "run.num_cpus=2", "run.work_dir=output"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the S3 server's endpoint and credentials
    job = subprocess.Popen([sys.executable, "-m", "pipeline.dedup", *args], cwd=REPO, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (location(out) / "_work" / "prepare" / "DONE").exists():
            assert job.poll() is None, job.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "prepare never finished"
            time.sleep(0.2)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        _end_session(job)
    assert not (location(out) / "manifest.json").exists()  # killed before the end
    rerun = subprocess.run([sys.executable, "-m", "pipeline.dedup", *args], cwd=REPO, env=env, text=True,
                           capture_output=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_outputs(store_outputs(out), local_run[0])


def test_incremental_dedup_against_a_reference_on_s3(s3_bucket, tmp_path, ray_session):
    """reference=s3://...: the same outputs as against the same reference on the local disk
    (report.json names its reference, the manifest its locations)."""
    from pipeline.dedup import run
    from tests.pipeline.test_dedup import build_corpus
    from tests.pipeline.test_dedup_incremental import _ledger, _new_corpus

    old, new = tmp_path / "old", tmp_path / "new"
    build_corpus(old)
    run(_config(old, tmp_path / "reference"))
    _new_corpus(new, _ledger(tmp_path / "reference"))
    run(_config(new, tmp_path / "incremental", reference=str(tmp_path / "reference")))
    expected = _outputs(tmp_path / "incremental")

    run(_config(upload_tree(old, f"{s3_bucket}/old"), f"{s3_bucket}/reference"))
    out = f"{s3_bucket}/incremental"
    run(_config(upload_tree(new, f"{s3_bucket}/new"), out, reference=f"{s3_bucket}/reference"))
    got = store_outputs(out)
    reports = [json.loads(files.pop("report.json")) for files in (got, expected)]
    assert [r.pop("incremental")["reference"] for r in reports] == [f"{s3_bucket}/reference", str(tmp_path / "reference")]
    assert reports[0] == reports[1]
    assert_same_outputs(got, expected)
