"""A real S3 server for the tests: moto's server mode on 127.0.0.1, nothing else reachable.

``s3_server`` (session) starts it and puts ``AWS_ENDPOINT_URL``, dummy credentials and a
region into ``os.environ`` *before* anything else of the session needs them, so Ray workers
started afterwards inherit them; ``ray_session`` depends on it when a test module uses both
(list ``s3_server`` first). ``s3_bucket`` gives each test a fresh, empty ``s3://<bucket>``.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import pytest

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask a cloud metadata address for credentials
}
_names = itertools.count()


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>

    def create_bucket(self, name: str | None = None) -> str:
        """A new bucket; its ``s3://`` URL."""
        import boto3

        name = name or f"bucket-{os.getpid()}-{next(_names)}"
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return f"s3://{name}"


def start_s3_server() -> tuple[object, S3Server]:
    """Start moto on a free loopback port; set the S3 environment to point at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(S3_ENV)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    return server, S3Server(endpoint)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    saved = {key: os.environ.get(key) for key in (*S3_ENV, "AWS_ENDPOINT_URL")}
    server, info = start_s3_server()
    yield info
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket()
