"""Validation at every phase length on the same text: windows of each length over the same
spans, the same targets averaged, loss by position, and the trainer's eval records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers.train_support import tiny_config, write_token_dir
from train.data import ShardSet
from train.distributed import init_distributed
from train.evaluate import loss_by_position, validation_losses
from train.trainer import Trainer, build_model


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return write_token_dir(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="module")
def model(tmp_path_factory, tokens):
    config = tiny_config(tmp_path_factory.mktemp("cfg"), tokens)
    torch.manual_seed(0)
    return build_model(config, None).eval()


def full_logits_losses(model, ids: torch.Tensor) -> torch.Tensor:
    """Per-token losses [n, L - 1] from the plain forward (full logits): the reference."""
    with torch.no_grad():
        logits = model(ids).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                           reduction="none").view(ids.shape[0], -1)


def test_both_lengths_average_the_same_targets_of_the_same_spans(model, tokens):
    from contextlib import nullcontext

    shards = ShardSet(tokens, 256, "validation", {})
    out = validation_losses(model, shards, [64, 256], tokens=1024, micro_tokens=256, env=init_distributed(),
                            autocast=nullcontext, with_segments=False, buckets=6)
    assert out["spans"] == 4 and out["span_len"] == 256
    assert out["targets"] == 4 * (255 - 3)  # no prediction at a span start; 64, 128, 192 start 64-windows
    spans = torch.from_numpy(shards.tokens(np.arange(4)))
    long = torch.zeros(4, 256)
    long[:, 1:] = full_logits_losses(model, spans)
    short = torch.zeros(4, 256)
    for w in range(4):
        short[:, w * 64 + 1 : (w + 1) * 64] = full_logits_losses(model, spans[:, w * 64 : (w + 1) * 64])
    common = torch.ones(256, dtype=torch.bool)
    common[::64] = False
    assert out["loss"]["256"] == pytest.approx(float(long[:, common].mean()), rel=1e-5)
    assert out["loss"]["64"] == pytest.approx(float(short[:, common].mean()), rel=1e-5)
    assert out["perplexity"]["64"] == pytest.approx(np.exp(out["loss"]["64"]))
    # positions before 64 have the same context at both lengths, so the same losses
    by = out["by_position"]
    early = [i for i, end in enumerate(by["bucket_end"]) if end < 64]
    assert early and by["bucket_start"][0] == 1 and by["bucket_end"][-1] == 255
    for i in early:
        assert by["loss"]["64"][i] == pytest.approx(by["loss"]["256"][i], rel=1e-5)
    late = out["late"]
    assert late["from_position"] == 64 and late["targets"] == 4 * (256 - 64 - 3)
    assert late["loss"]["256"] == pytest.approx(float(long[:, 64:][:, common[64:]].mean()), rel=1e-5)


def test_per_document_validation_and_uneven_windows(model, tokens):
    from contextlib import nullcontext

    shards = ShardSet(tokens, 256, "validation", {})
    out = validation_losses(model, shards, [100, 256], tokens=512, micro_tokens=512, env=init_distributed(),
                            autocast=nullcontext, with_segments=True, buckets=5)
    assert out["spans"] == 2 and set(out["loss"]) == {"100", "256"}
    assert all(np.isfinite(v) for v in out["loss"].values())
    spans = torch.from_numpy(shards.tokens(np.arange(2)))
    segments = torch.from_numpy(shards.segment_ids(np.arange(2)))
    assert bool((segments[:, 1:] != segments[:, :-1]).any())  # the spans do hold several documents
    with torch.no_grad():
        logits = model(spans, segment_ids=segments).logits
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), spans[:, 1:].reshape(-1), reduction="none")
    ref = ref.view(2, 255)
    common = torch.ones(256, dtype=torch.bool)
    common[[0, 100, 200]] = False
    assert out["loss"]["256"] == pytest.approx(float(ref[:, common[1:]].mean()), rel=1e-5)


def test_long_context_losses_through_the_cache_equal_one_full_pass(model, tokens):
    from contextlib import nullcontext

    shards = ShardSet(tokens, 256, "validation", {})
    result = loss_by_position(model, shards, 512, 1, 4, 128, torch.device("cpu"), nullcontext)
    ids = torch.from_numpy(shards.tokens(np.arange(2)).reshape(1, -1))
    ref = full_logits_losses(model, ids)[0].double()
    edges = list(zip(result["bucket_start"], result["bucket_end"]))
    for (start, end), loss in zip(edges, result["loss"]):
        assert loss == pytest.approx(float(ref[start - 1 : end].mean()), rel=1e-4)


def test_trainer_eval_record_and_json(tmp_path, tokens):
    config = tiny_config(tmp_path, tokens, total_tokens=1024 * 2, eval={"every": 0}, checkpoint_every=0)
    trainer = Trainer(config, config.run_dir, init_distributed())
    trainer.fit()
    files = sorted((Path(config.run_dir) / "eval").glob("val-*.json"))
    saved = json.loads(files[-1].read_text())
    assert set(saved["val_loss"]) == {"64", "256"} and saved["val_text"]["span_len"] == 256
    assert saved["val_text"]["spans"] == 4 and set(saved["loss_by_position"]["loss"]) == {"64", "256"}
    assert saved["val_loss_late"]["from_position"] == 64
    line = [json.loads(x) for x in (Path(config.run_dir) / "metrics.jsonl").read_text().splitlines()][-1]
    assert line["kind"] == "eval" and "loss_by_position" not in line and line["val_loss"] == saved["val_loss"]
