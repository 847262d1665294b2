"""Settings of the dedup stage (the values live in configs/data/slimpajama.yaml; these
defaults equal that file, which a test checks) and the small rules derived from them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from common.config import to_dict
from common.storage import StorageConfig
from pipeline.filters import FilterConfig
from pipeline.kernel import RunConfig
from pipeline.lsh import optimal_params
from pipeline.minhash import MinHasher

DEFAULT_CONFIG = "configs/data/slimpajama.yaml"


@dataclass
class NormalizeConfig:
    enabled: bool = True  # ftfy.fix_text(text, normalization="NFC") on every document


@dataclass
class MinHashConfig:
    num_perm: int = 128
    ngram: int = 13
    unit: Literal["char", "word"] = "char"
    seed: int = 1
    scheme: Literal["fast", "datasketch", "datasketch-legacy"] = "fast"


@dataclass
class LSHConfig:
    threshold: float = 0.8
    bands: Optional[int] = None  # bands and rows both null: derived from threshold + weights
    rows: Optional[int] = None
    false_positive_weight: float = 0.002  # 21 x 6 at threshold 0.8 (equal weights: SlimPajama's 9 x 13)
    false_negative_weight: float = 0.998
    verify: Literal["exact", "estimate", "none"] = "exact"
    verify_threshold: float = 0.8  # on the exact Jaccard (verify=exact) or the estimate (verify=estimate)
    estimate_accept: float = 0.9  # verify=exact: estimates this high are accepted without the exact check
    estimate_reject: float = 0.65  # verify=exact: estimates this low are rejected without it
    max_bucket_pairs: int = 64

    def __post_init__(self) -> None:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both lsh.bands and lsh.rows, or neither (then they follow lsh.threshold)")


@dataclass
class DuplicatesConfig:
    exact: bool = True  # drop identical normalized text before MinHash
    near: bool = True  # MinHash-LSH near-duplicates
    keep: Literal["smallest_id", "longest", "source_priority"] = "smallest_id"
    source_priority: list[str] = field(default_factory=list)  # for keep=source_priority, best first


@dataclass(kw_only=True)
class DedupRunConfig(RunConfig):
    # Hash partitions of the shuffles (exact, LSH, components); auto = one per
    # PARTITION_INPUT_BYTES of input files (16 to 65,536): a task's memory stays flat as the corpus grows.
    partitions: Union[int, Literal["auto"]] = "auto"
    batch_docs: int = 512  # documents per signature batch
    chunk_bytes: int = 67108864  # uncompressed bytes per output .jsonl.zst chunk
    # The exchange between steps (pipeline/dedup/exchange.py): files one merge task
    # groups, rows it holds at a time (all its files together), rows it streams at most.
    merge_fanin: int = 32
    merge_read_bytes: int = 67108864
    merge_task_bytes: int = 4294967296

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.partitions != "auto" and self.partitions < 1:
            raise ValueError("run.partitions must be at least 1 (or auto)")
        if self.merge_fanin < 2 or self.merge_read_bytes < 1 or self.merge_task_bytes < 1:
            raise ValueError("run.merge_fanin must be at least 2, run.merge_read_bytes and run.merge_task_bytes at least 1")


@dataclass
class DedupStageConfig:
    input: str = "data/sample"  # a folder or an object-store URL (s3://bucket/prefix, gs://..., file://...)
    output: str = "data/dedup"  # likewise
    reference: Optional[str] = None  # an earlier dedup output to deduplicate against (incremental); a URL too
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    lsh: LSHConfig = field(default_factory=LSHConfig)
    duplicates: DuplicatesConfig = field(default_factory=DuplicatesConfig)
    run: DedupRunConfig = field(default_factory=DedupRunConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)  # object-store endpoint and credentials

    def __post_init__(self) -> None:
        if self.lsh.bands is not None and self.lsh.rows is not None and self.lsh.bands * self.lsh.rows > self.minhash.num_perm:
            raise ValueError(f"lsh.bands x lsh.rows = {self.lsh.bands * self.lsh.rows} exceeds minhash.num_perm = {self.minhash.num_perm}")


PARTITION_INPUT_BYTES = 64 << 20
# A small input gets a few partitions, not many tiny tasks: each task of a partition step
# costs scheduling and, with the work folder on an object store, requests (on the sample
# corpus 4 instead of 16 took 30% off the local run and 45% of the requests). The cap keeps
# routed files' indexes (8 bytes a partition) small.
MIN_PARTITIONS, MAX_PARTITIONS = 4, 65536


def with_partitions(cfg: DedupStageConfig, input_bytes: int) -> DedupStageConfig:
    """``cfg`` with ``run.partitions`` resolved to a number (``auto``: from the input size)."""
    if cfg.run.partitions != "auto":
        return cfg
    partitions = min(MAX_PARTITIONS, max(MIN_PARTITIONS, -(-input_bytes // PARTITION_INPUT_BYTES)))
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, partitions=partitions))


def band_layout(cfg: DedupStageConfig) -> tuple[int, int]:
    if cfg.lsh.bands is not None and cfg.lsh.rows is not None:
        return cfg.lsh.bands, cfg.lsh.rows
    return optimal_params(cfg.lsh.threshold, cfg.minhash.num_perm, cfg.lsh.false_positive_weight, cfg.lsh.false_negative_weight)


def hasher(cfg: DedupStageConfig) -> MinHasher:
    m = cfg.minhash
    return MinHasher(num_perm=m.num_perm, ngram=m.ngram, unit=m.unit, seed=m.seed, scheme=m.scheme)


def keep_rank(cfg: DuplicatesConfig, source: str, nbytes: int) -> int:
    """Rank of a document under the keep rule: smaller is preferred; ties go to the smaller id."""
    if cfg.keep == "longest":
        return -nbytes
    if cfg.keep == "source_priority":
        try:
            return cfg.source_priority.index(source)
        except ValueError:
            return len(cfg.source_priority)
    return 0


def content_settings(cfg: DedupStageConfig) -> dict[str, Any]:
    """What decides the outputs: everything but the run and storage sections (how to compute, where to reach)."""
    return {k: v for k, v in to_dict(cfg).items() if k not in ("run", "storage")}


# What the steps leave for later steps: a change makes a resumed run of an older version
# start its work folder afresh rather than read files it cannot use.
WORK_FORMAT = 2


def work_settings(cfg: DedupStageConfig) -> dict[str, Any]:
    """What decides the work folder's files: the content plus how documents are batched
    and partitioned (files of another partitioning cannot be reused)."""
    run = cfg.run
    return {**content_settings(cfg), "work_format": WORK_FORMAT, "partitions": run.partitions,
            "batch_docs": run.batch_docs, "chunk_bytes": run.chunk_bytes,
            "merge": [run.merge_fanin, run.merge_read_bytes, run.merge_task_bytes]}
