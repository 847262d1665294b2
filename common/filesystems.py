"""Which ``pyarrow.fs`` file system serves an object-store URL, with what settings: the
optional ``storage:`` section, else the standard environment (``AWS_*`` for S3; for GCS
the application default credentials, or ``STORAGE_EMULATOR_HOST`` naming an emulator)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

REMOTE_SCHEMES = ("s3", "gs", "gcs")
GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"  # the GCS emulator variable of Google's clients, gcsfs and others


@dataclass(frozen=True)
class StorageConfig:
    """The optional ``storage:`` section; empty fields fall back to the standard environment."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000 for MinIO; else AWS_ENDPOINT_URL
    region: str | None = None  # else AWS_DEFAULT_REGION / AWS_REGION
    access_key_id: str | None = field(default=None, repr=False, metadata={"secret": True})
    secret_access_key: str | None = field(default=None, repr=False, metadata={"secret": True})
    request_attempts: int = 5  # per request, pyarrow's AwsStandardS3RetryStrategy

    def __post_init__(self) -> None:
        if self.request_attempts < 1:
            raise ValueError(f"storage.request_attempts must be at least 1, got {self.request_attempts}")


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def filesystem(scheme: str, cfg: "StorageConfig | None") -> Any:
    """The file system of ``scheme``; a changed environment (endpoint, region, key) gets a fresh client."""
    env = (_env_endpoint(), os.environ.get("AWS_DEFAULT_REGION"), os.environ.get("AWS_ACCESS_KEY_ID"),
           os.environ.get(GCS_EMULATOR_ENV))
    return _filesystem(scheme, cfg, env)


@functools.lru_cache(maxsize=32)
def _filesystem(scheme: str, cfg: StorageConfig | None, env: tuple) -> Any:
    """One pyarrow file system per scheme, settings and environment (``env`` keys the cache,
    so a changed endpoint gets a fresh client)."""
    import pyarrow.fs as pafs

    if scheme == "s3":
        cfg = cfg or StorageConfig()
        kwargs: dict[str, Any] = {
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=cfg.request_attempts),
            "allow_delayed_open": True,  # a small object is one PutObject, not a 3-request multipart upload
        }
        endpoint = cfg.endpoint_url or _env_endpoint()
        if endpoint:
            parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
            kwargs["endpoint_override"] = parsed.netloc
            kwargs["scheme"] = parsed.scheme
        region = cfg.region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        if region:
            kwargs["region"] = region
        if cfg.access_key_id and cfg.secret_access_key:
            kwargs["access_key"] = cfg.access_key_id
            kwargs["secret_key"] = cfg.secret_access_key
        return pafs.S3FileSystem(**kwargs)
    if scheme in ("gs", "gcs"):
        emulator = os.environ.get(GCS_EMULATOR_ENV)
        if emulator:  # an emulator (tests, local development) takes no credentials
            parsed = urlparse(emulator if "://" in emulator else f"http://{emulator}")
            return pafs.GcsFileSystem(anonymous=True, endpoint_override=parsed.netloc, scheme=parsed.scheme)
        return pafs.GcsFileSystem()
    raise ValueError(f"unsupported storage scheme {scheme!r} (use s3://, gs://, file:// or a local path)")
