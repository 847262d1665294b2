"""Settings of the tokenize stage (values in configs/data/tokenize.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from common.config import to_dict
from common.storage import StorageConfig
from pipeline import split as splitting
from pipeline.kernel import RunConfig

DEFAULT_CONFIG = "configs/data/tokenize.yaml"
FORMATS = ("arrow", "megatron")  # packed Arrow shards; Megatron's indexed dataset (.bin + .idx)


@dataclass
class SplitConfig:
    validation_fraction: float  # of documents, by id hash
    test_fraction: float
    seed: int

    def __post_init__(self) -> None:
        splitting.check_fractions(self.validation_fraction, self.test_fraction)


@dataclass
class PackConfig:
    seq_lens: list[int]
    source_weights: dict[str, float]  # train repetitions per source (missing: 1.0)
    shuffle_seed: int

    def __post_init__(self) -> None:
        if not self.seq_lens or any(L < 1 or L > (1 << 30) for L in self.seq_lens):
            raise ValueError(f"seq_lens must be a non-empty list of positive lengths, got {self.seq_lens}")
        if len(set(self.seq_lens)) != len(self.seq_lens):
            raise ValueError(f"seq_lens has duplicates: {self.seq_lens}")
        bad = {k: v for k, v in self.source_weights.items() if not 0 <= v <= 1000}
        if bad:
            raise ValueError(f"source_weights must be in [0, 1000]: {bad}")

    @property
    def max_repeats(self) -> int:
        """Epochs of the train stream: a weight of 2.5 needs three."""
        return max([int(w) + (1 if w % 1 else 0) for w in self.source_weights.values()] + [1])


@dataclass
class ShardConfig:
    max_bytes: int  # upper bound of one shard file
    rows_per_batch: int  # rows per Arrow record batch inside a shard

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.rows_per_batch < 1:
            raise ValueError(f"max_bytes and rows_per_batch must be positive, got {self.max_bytes}, {self.rows_per_batch}")


@dataclass(kw_only=True)
class TokenizeRunConfig(RunConfig):
    encoder: Literal["auto", "tokenizers", "tiktoken"]  # auto = tiktoken when installed
    encode_threads: int  # threads per task inside the encoder
    batch_docs: int  # documents per encode batch (and per part-file record batch)
    keep_work: bool = False  # the per-file token parts are large; drop them after success

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encode_threads < 1 or self.batch_docs < 1:
            raise ValueError("encode_threads and batch_docs must be positive")


@dataclass
class TokenizeConfig:
    input: str  # a cleaned corpus: one sub-folder per source (a path or s3://, gs://, file:// URL)
    output: str  # a path or URL
    tokenizer: str | None  # tokenizer.json or a model folder holding one (null: the committed GPT-2 BPE)
    formats: list[str]  # outputs, any of FORMATS
    split: SplitConfig
    pack: PackConfig
    shards: ShardConfig
    run: TokenizeRunConfig
    storage: StorageConfig = field(default_factory=StorageConfig)  # object-store endpoint and credentials

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if not self.formats or unknown or len(set(self.formats)) != len(self.formats):
            raise ValueError(f"formats must be a non-empty list of distinct names from {list(FORMATS)}, got {self.formats}")


def content_config(cfg: TokenizeConfig) -> dict[str, Any]:
    """The settings that decide shard contents (stored in every shard's metadata)."""
    data = to_dict(cfg)
    for key in ("input", "output", "run", "tokenizer", "formats", "storage"):
        data.pop(key)
    return data


def split_names(cfg: TokenizeConfig) -> list[str]:
    names = ["train", "validation"]
    if cfg.split.test_fraction > 0:
        names.append("test")
    return names
