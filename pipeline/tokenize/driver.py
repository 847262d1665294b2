"""The tokenize job: its two steps on the stage kernel, then the shards are published.

Each step's settings are only what decides its files, so a run with another packing
(lengths, shuffle, shard size) reuses the per-file token parts of an earlier run, and
a run after a crash reuses every part that was finished; a part is encoded again when
its input file changed (size or modification time).
"""

from __future__ import annotations

import importlib.util
import json
import time
from typing import Any

from common.config import to_dict
from common.storage import location
from pipeline.corpus_io import list_source_files
from pipeline.kernel import Stage, Task, TaskRunner, file_fingerprint, file_key
from pipeline.shard_format import FORMAT_VERSION, TOKENIZER_NAME
from pipeline.tokenize.config import TokenizeConfig, content_config, split_names
from pipeline.tokenize.encode import PART_VERSION, encode_file
from pipeline.tokenize.megatron import FOLDER as MEGATRON_FOLDER
from pipeline.tokenize.megatron import write_megatron_split
from pipeline.tokenize.pack import pack_split
from pipeline.tokenize.report import build_report
from pipeline.tokenizer import describe_tokenizer, resolve_encoder

OUTPUTS = ("seq[0-9]*", MEGATRON_FOLDER, TOKENIZER_NAME)  # seq<L>/<split>/ folders, megatron/, the tokenizer


def run(cfg: TokenizeConfig) -> dict[str, Any]:
    """Run (or resume) the stage; returns the report (also written as manifest.json)."""
    started = time.perf_counter()
    tokenizer = describe_tokenizer(cfg.tokenizer)  # fail here, not in a worker, on a bad tokenizer
    tok_sha = tokenizer.sha256
    encoder = resolve_encoder(cfg.run.encoder, tokenizer.gpt2)  # resolved once: every worker uses the same one
    if encoder == "tiktoken" and importlib.util.find_spec("tiktoken") is None:
        raise ImportError("run.encoder=tiktoken needs the tiktoken package: pip install -e '.[fast]'")
    files = list_source_files(cfg.input, cfg.storage)
    if not files:
        raise FileNotFoundError(f"{cfg.input}: no corpus files (.jsonl, .jsonl.zst, .parquet) found")
    inputs = [file_fingerprint(sf.path, sf.label) for sf in files]
    stage = Stage("tokenize", cfg.output, {"content": content_config(cfg), "tokenizer_sha256": tok_sha,
                                           "eos_id": tokenizer.eos_id, "formats": cfg.formats}, inputs, OUTPUTS, cfg.storage,
                  cfg.run.work_dir)
    if stage.is_complete():
        return stage.read_manifest()
    stage.begin()
    runner = TaskRunner.from_config(stage, cfg.run)

    encode_dir = stage.step_dir("encode")
    parts = [encode_dir / f"{file_key(i)}.arrow" for i in range(len(files))]
    # Largest files first, so one big file does not run alone at the end.
    order = sorted(range(len(files)), key=lambda i: -inputs[i]["size"])
    encode_settings = {"part_version": PART_VERSION, "tokenizer_sha256": tok_sha, "eos_id": tokenizer.eos_id,
                       "split": to_dict(cfg.split), "source_weights": cfg.pack.source_weights}
    encoded = runner.run("encode", encode_file,
                         [Task(file_key(i), (cfg, tokenizer, encoder, files[i], parts[i]), files[i].label, inputs[i])
                          for i in order], encode_settings)
    summaries: list[dict[str, Any]] = [{}] * len(files)
    for i, summary in zip(order, encoded):
        summaries[i] = summary
    tokenize_wall = time.perf_counter() - started

    holdout = frozenset(bytes.fromhex(h) for s in summaries for h in s["holdout_sha256"])
    metadata = {
        "format_version": str(FORMAT_VERSION),
        "tokenizer_sha256": tok_sha,
        "eos_id": str(tokenizer.eos_id),
        "vocab_size": str(tokenizer.vocab_size),
        "config": json.dumps(content_config(cfg), sort_keys=True, separators=(",", ":")),
    }
    shared = runner.share(holdout)
    step_settings = {"content": content_config(cfg), "tokenizer_sha256": tok_sha, "eos_id": tokenizer.eos_id}
    splits = []
    if "arrow" in cfg.formats:
        # One task per (split, length): each reads the mapped parts on its own, so the big
        # train split packs its lengths in parallel.
        pack_dir = stage.step_dir("pack")
        splits = runner.run("pack", pack_split,
                            [Task(f"{split}-{seq_len}", (cfg, split, seq_len, parts, shared, pack_dir, metadata))
                             for split in split_names(cfg) for seq_len in cfg.pack.seq_lens], step_settings)
        for seq_len in cfg.pack.seq_lens:
            stage.publish(pack_dir / f"seq{seq_len}", f"seq{seq_len}")
    megatron = []
    if "megatron" in cfg.formats:
        megatron_dir = stage.step_dir("megatron")
        megatron = runner.run("megatron", write_megatron_split,
                              [Task(split, (cfg, split, parts, shared, megatron_dir, tokenizer.vocab_size))
                               for split in split_names(cfg)], step_settings)
        stage.publish(megatron_dir / MEGATRON_FOLDER, MEGATRON_FOLDER)
    # the trainer and the exports find it here
    (location(cfg.output, cfg.storage) / TOKENIZER_NAME).write_bytes(location(tokenizer.path).read_bytes())
    report = build_report(cfg, files, summaries, splits, megatron, tokenizer, runner.reused["encode"], tokenize_wall,
                          time.perf_counter() - started)
    stage.finish(report, keep_work=cfg.run.keep_work, indent=2, sort_keys=False)  # last: marks the stage complete
    return report
