"""Shared fixtures: one local Ray per test session, paths to the test corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# fixtures s3_server, s3_bucket and gcs_server, gcs_bucket: the S3 and GCS test servers
pytest_plugins = ["tests.helpers.s3", "tests.helpers.gcs"]

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session", autouse=True)
def local_cache(tmp_path_factory) -> Path:
    """The local cache (shards, models, work folders of object-store outputs) inside the
    session's temporary folder, not the machine's."""
    from common.storage import CACHE_ENV

    path = tmp_path_factory.mktemp("btlm-cache")
    os.environ[CACHE_ENV] = str(path)
    return path


@pytest.fixture(params=["s3", "gs"])
def store_bucket(request) -> str:
    """A fresh bucket on each object store the seam speaks: ``s3://`` and ``gs://``."""
    return request.getfixturevalue(f"{'gcs' if request.param == 'gs' else 's3'}_bucket")


@pytest.fixture(scope="session")
def ray_session(s3_server, gcs_server):
    """One embedded Ray instance for the whole test session (stages reuse it). The S3 and
    GCS test servers start first, so Ray's workers inherit their endpoints and credentials."""
    import ray

    from pipeline.kernel import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    """A small real corpus (~400 KB, four sources) built by pipeline.sample."""
    from common.config import load_config
    from pipeline.sample import SampleConfig, run

    out = tmp_path_factory.mktemp("sample") / "corpus"
    cfg = load_config(
        SampleConfig,
        REPO / "configs" / "data" / "sample.yaml",
        [f"output={out}", "max_total_bytes=400000", "chunk_bytes=60000"],
    )
    run(cfg)
    return out


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` (``gpu(devices=2)``: that many) are skipped on machines without the CUDA devices."""
    marked = [(item, item.get_closest_marker("gpu")) for item in items]
    marked = [(item, m) for item, m in marked if m is not None]
    if not marked:
        return
    import torch

    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for item, marker in marked:
        needed = marker.kwargs.get("devices", 1)
        if found < needed:
            item.add_marker(pytest.mark.skip(reason=f"needs {needed} CUDA device(s), this machine has {found}"))
