"""Settings of the decontamination stage (the values live in
configs/data/decontaminate.yaml; these defaults equal that file, which a test checks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from common.config import to_dict
from pipeline.kernel import RunConfig

DEFAULT_CONFIG = "configs/data/decontaminate.yaml"


@dataclass
class NgramConfig:
    n: int = 13  # words per n-gram (GPT-3, lm-eval's janitor)
    max_eval_items: int = 10  # an n-gram in more evaluation items than this is boilerplate: left out
    max_corpus_docs: int = 50  # an evaluation n-gram in more corpus documents than this: left out

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_eval_items < 1 or self.max_corpus_docs < 1:
            raise ValueError("ngrams.n, ngrams.max_eval_items and ngrams.max_corpus_docs must be at least 1")


@dataclass
class PolicyConfig:
    action: Literal["flag", "remove", "redact"] = "flag"
    min_ngrams: int = 1  # distinct matched n-grams that make a document contaminated
    window: int = 200  # redact: characters cut on each side of a matched n-gram
    min_piece_chars: int = 200  # redact: shorter pieces are dropped
    max_pieces: int = 10  # redact: a document cut into more pieces is dropped whole

    def __post_init__(self) -> None:
        if self.min_ngrams < 1 or self.window < 0 or self.min_piece_chars < 0 or self.max_pieces < 1:
            raise ValueError("policy: min_ngrams >= 1, window >= 0, min_piece_chars >= 0, max_pieces >= 1")


@dataclass(kw_only=True)
class DecontaminateRunConfig(RunConfig):
    batch_docs: int = 64  # documents hashed together (a batch's word hashes bound a scan task's memory)


@dataclass
class DecontaminateConfig:
    input: str = "data/dedup/corpus"
    output: str = "data/decontam"
    eval_sets: list[str] = field(default_factory=lambda: ["data/eval_tasks"])
    text_field: str = "text"  # of jsonl/parquet evaluation files without their own FILE:FIELD
    ngrams: NgramConfig = field(default_factory=NgramConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    run: DecontaminateRunConfig = field(default_factory=DecontaminateRunConfig)

    def __post_init__(self) -> None:
        if not self.eval_sets:
            raise ValueError("eval_sets must name at least one evaluation set")


def content_settings(cfg: DecontaminateConfig) -> dict[str, Any]:
    """What decides the outputs: everything but the run section (which says how to compute)."""
    return {k: v for k, v in to_dict(cfg).items() if k != "run"}
