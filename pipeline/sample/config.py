"""Settings of the sample corpus (values in configs/data/sample.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_CONFIG = "configs/data/sample.yaml"


@dataclass
class IncludeRule:
    root: str  # a name from `input`
    glob: str  # matched against the path under the root; ** spans folders
    render: Literal["text", "man", "info"]


@dataclass
class SourceConfig:
    share: float  # fraction of max_total_bytes
    order: Literal["by_tail", "by_family"]
    include: list[IncludeRule]
    exclude: list[str]  # globs on "<root name>/<path>"


@dataclass
class SampleConfig:
    input: dict[str, str]  # root name -> folder ({stdlib}, {purelib}, {platlib} allowed)
    output: str
    max_total_bytes: int
    max_doc_bytes: int
    chunk_bytes: int
    workers: int
    seed: int
    fill_attempts: int  # consecutive documents that do not fit before a source counts as full
    sources: dict[str, SourceConfig]

    def __post_init__(self) -> None:
        for name, src in self.sources.items():
            if not 0 <= src.share <= 1:
                raise ValueError(f"sources.{name}.share must be within [0, 1], got {src.share}")
            for rule in src.include:
                if rule.root not in self.input:
                    raise ValueError(f"sources.{name}.include: root {rule.root!r} is not a key of input")
        if sum(s.share for s in self.sources.values()) > 1 + 1e-9:
            raise ValueError("the shares of all sources add up to more than 1")
        if self.max_doc_bytes <= 0 or self.chunk_bytes <= 0 or self.workers <= 0:
            raise ValueError("max_doc_bytes, chunk_bytes and workers must be positive")
