"""Typed settings of a pre-training run (values live in configs/train/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional


@dataclass
class ModelSection:
    config: str  # a YAML file in configs/model/
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection:
    root: str  # output folder of `make tokenize` (holds seq<L>/<split>/shard-*.arrow); a path or s3://, gs:// URL
    train_split: str
    validation_split: str
    reset_attention_at_documents: bool  # per-document attention via segment ids
    tokenizer_sha256: Optional[str]  # expected tokenizer hash; null = whatever the shards agree on


@dataclass
class Phase:
    seq_len: int
    fraction: float  # of total_tokens

    def __post_init__(self) -> None:
        if self.seq_len <= 1:
            raise ValueError(f"phase seq_len must be > 1, got {self.seq_len}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"phase fraction must be in (0, 1], got {self.fraction}")


@dataclass
class EvalSection:
    every: int  # steps; 0 = only at the end
    tokens: int  # validation text (spans of the longest phase length), evaluated at every phase length
    long_context_len: int  # tokens per sequence of the loss-by-position evaluation
    long_context_sequences: int
    long_context_chunk: int  # query chunk of the incremental long-context pass
    long_context_buckets: int


@dataclass
class SampleSection:
    tokenizer: Optional[str]  # tokenizer.json for the sample generation; null = skip
    prompt: str
    max_new_tokens: int
    temperature: float
    top_k: int


@dataclass
class LogSection:
    every: int  # steps between metrics lines
    progress: bool
    tensorboard: bool  # used only when tensorboard is installed
    peak_tflops: Optional[float]  # per device, for MFU; null = look up (CUDA) or skip


@dataclass
class TrainConfig:
    model: ModelSection
    data: DataSection
    phases: list[Phase]
    tokens_per_batch: int
    micro_batch_tokens: int  # per device and forward pass
    total_tokens: int
    lr: float
    warmup_tokens: int
    decay_to: float  # final lr as a fraction of peak
    schedule: Literal["linear", "cosine"]
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    clip: float
    eval: EvalSection
    checkpoint_every: int  # steps; 0 = only at the end
    keep_last: int
    resume: Literal["auto", "none"]
    init_from: Optional[str]  # a Hugging Face-layout model folder (path or URL) to continue from
    seed: int
    precision: Literal["auto", "fp32", "bf16"]
    compile: bool
    num_threads: Optional[int]
    parallel: Literal["ddp", "fsdp"]
    max_bad_steps: int  # consecutive non-finite steps before stopping
    log: LogSection
    sample: SampleSection
    run_dir: Optional[str] = None  # null = runs/<config file name>; a URL (s3://...) keeps the run there
    # Local folder for what an object store gives the run (shards, checkpoints, init_from) and
    # a remote run_dir's working copy; null = $BTLM_CACHE_DIR, else <system temp>/btlm-cache. Shards use at most
    # cache_max_gb of it (least recently used evicted first).
    cache_dir: Optional[str] = None
    cache_max_gb: float = 64.0
    max_steps: Optional[int] = None  # stop early (the schedule still spans total_tokens)

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("phases must list at least one {seq_len, fraction}")
        total = sum(p.fraction for p in self.phases)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"phase fractions must sum to 1, got {total}")
        for p in self.phases:
            if self.tokens_per_batch % p.seq_len:
                raise ValueError(f"tokens_per_batch {self.tokens_per_batch} is not a multiple of seq_len {p.seq_len}")
            if self.micro_batch_tokens % p.seq_len and self.micro_batch_tokens > p.seq_len:
                raise ValueError(f"micro_batch_tokens {self.micro_batch_tokens} is not a multiple of seq_len {p.seq_len}")
        if not 0.0 <= self.decay_to <= 1.0:
            raise ValueError(f"decay_to must be in [0, 1], got {self.decay_to}")
        if self.cache_max_gb <= 0:
            raise ValueError(f"cache_max_gb must be > 0, got {self.cache_max_gb}")
        if self.keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {self.keep_last}")


def resolve_run_dir(config: TrainConfig, config_path: str | Path | None) -> str:
    """The run's folder as the user named it: a local path or an object store URL."""
    if config.run_dir:
        return config.run_dir
    name = Path(config_path).stem if config_path else "run"
    return str(Path("runs") / name)
