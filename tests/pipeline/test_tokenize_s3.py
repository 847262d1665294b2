"""The tokenize stage with input and output on a real S3 server (moto on 127.0.0.1): every
published object byte for byte the local disk's, and a run stopped after a step resumes
on the store to the same objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.config import load_config
from common.storage import location
from pipeline.tokenize import TokenizeConfig, run
from tests.helpers.interrupt import interrupted_after
from tests.pipeline.test_dedup_s3 import store_outputs, upload_tree
from tests.pipeline.test_tokenize_data import write_corpus

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def tokenize(corpus: str, output: str, *overrides: str) -> dict:
    cfg = load_config(TokenizeConfig, REPO / "configs" / "data" / "tokenize.yaml",
                      [f"input={corpus}", f"output={output}", "pack.seq_lens=[128,512]", "formats=[arrow,megatron]",
                       "split.validation_fraction=0.15", "shards.max_bytes=100000", "shards.rows_per_batch=64", "run.progress=false", *overrides])
    return run(cfg)


def local_outputs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def comparable(manifest: bytes) -> dict:
    """The stage manifest without what names locations, how it ran, and what it measured."""
    data = json.loads(manifest)
    for key in ("input", "output", "run"):
        data["config"].pop(key)
    data.pop("timing")
    data.pop("input_files_reused")
    return data


def assert_same_outputs(remote: dict[str, bytes], local: dict[str, bytes]) -> None:
    assert sorted(remote) == sorted(local)
    assert any(name.startswith("megatron/") for name in local) and any(name.startswith("seq512/") for name in local)
    differ = [name for name in local if remote[name] != local[name]]
    assert differ == ["manifest.json"], differ
    assert comparable(remote["manifest.json"]) == comparable(local["manifest.json"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("tok-s3") / "corpus", max_files=24, chunk_bytes=60_000)


@pytest.fixture(scope="module")
def local_run(corpus, tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("tok-local") / "tokens"
    report = tokenize(str(corpus), str(out))
    return local_outputs(out), report


@pytest.fixture(scope="module")
def s3_corpus(corpus, s3_server) -> str:
    return upload_tree(corpus, f"{s3_server.create_bucket()}/corpus")


def test_tokenize_on_s3_gives_the_local_bytes(local_run, s3_corpus, s3_bucket):
    out = f"{s3_bucket}/tokens"
    report = tokenize(s3_corpus, out)
    assert report["input_files"] == local_run[1]["input_files"] > 1
    assert_same_outputs(store_outputs(out), local_run[0])
    assert not (location(out) / "_work").is_dir()


def test_stats_of_shards_on_s3(local_run, s3_corpus, s3_bucket, capsys):
    from pipeline.stats import main

    out = f"{s3_bucket}/tokens"
    tokenize(s3_corpus, out)
    with pytest.raises(SystemExit) as exit_code:
        main([out, "--json"])
    assert exit_code.value.code == 0  # every check passed: rows and SHA-256 as the manifests list
    report = json.loads(capsys.readouterr().out)
    assert report["root"] == out and report["ok"]
    assert [f["folder"].split("/")[-2:] for f in report["folders"]] == [
        ["seq128", "train"], ["seq128", "validation"], ["seq512", "train"], ["seq512", "validation"]]


def test_an_interrupted_tokenize_on_s3_resumes_to_identical_outputs(local_run, s3_corpus, s3_bucket):
    out = f"{s3_bucket}/tokens"
    with interrupted_after("encode"):
        tokenize(s3_corpus, out, "run.work_dir=output")  # the work folder on the store, as on a cluster
    assert not (location(out) / "manifest.json").exists()
    assert (location(out) / "_work" / "encode" / "DONE").is_file()
    report = tokenize(s3_corpus, out, "run.work_dir=output")
    assert report["input_files_reused"] == report["input_files"]  # every part came from the stopped run
    assert_same_outputs(store_outputs(out), local_run[0])


def test_tokenize_on_gcs_with_its_work_folder_there_gives_the_local_bytes(local_run, corpus, gcs_server, gcs_bucket):
    """``gs://`` through the same seam: input, output and the work folder (every step's
    files, records and markers, as on a cluster) on the GCS server."""
    out = f"{gcs_bucket}/tokens"
    report = tokenize(upload_tree(corpus, f"{gcs_server.create_bucket()}/corpus"), out, "run.work_dir=output")
    assert report["input_files"] == local_run[1]["input_files"]
    assert_same_outputs(store_outputs(out), local_run[0])
    assert not (location(out) / "_work").is_dir()  # dropped once the manifest is written
