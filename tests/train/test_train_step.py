"""The one optimizer step: accumulation, the all-reduce skip, clipping, non-finite steps, group lrs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model import BTLMConfig, BTLMLMHeadModel
from tests.helpers.train_support import TINY_MODEL, real_documents
from train.data import MicroBatch
from train.lr import LRSchedule, group_lr_scales, lr_multiplier, set_group_lrs
from train.step import optimizer_step


@pytest.fixture(scope="module")
def model_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.yaml"
    path.write_text(TINY_MODEL, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def model_config(model_yaml):
    return BTLMConfig.from_yaml(model_yaml)


@pytest.fixture(scope="module")
def ids():
    """Four rows of 64 byte tokens of real text."""
    stream = np.frombuffer(b" ".join(real_documents())[: 4 * 64], dtype=np.uint8)
    return torch.from_numpy(stream.astype(np.int64)).view(4, 64)


def fresh(model_config, lr=1e-2):
    torch.manual_seed(0)
    model = BTLMLMHeadModel(model_config)
    optimizer = torch.optim.AdamW(model.get_mup_param_groups(lr, 0.1), lr=lr, betas=(0.9, 0.95), eps=1e-8)
    return model, optimizer


def test_accumulated_micro_batches_match_one_batch(model_config, ids):
    whole, opt_whole = fresh(model_config)
    split, opt_split = fresh(model_config)
    one = optimizer_step(whole, opt_whole, [MicroBatch(ids, None)], clip=1.0)
    two = optimizer_step(split, opt_split, [MicroBatch(ids[:2], None), MicroBatch(ids[2:], None)], clip=1.0)
    assert one.finite and two.finite
    assert two.loss == pytest.approx(one.loss, rel=1e-5)
    assert two.grad_norm == pytest.approx(one.grad_norm, rel=1e-4)
    assert one.loss == pytest.approx(math.log(model_config.vocab_size), rel=0.2)  # an untrained model's loss
    for a, b in zip(whole.parameters(), split.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        assert a.grad is None and b.grad is None  # cleared for the next step


def test_gradient_sync_is_skipped_for_all_but_the_last_micro_batch(model_config, ids):
    model, optimizer = fresh(model_config)
    entered, reduced = [], []

    class NoSync:
        def __enter__(self):
            entered.append(len(reduced))

        def __exit__(self, *exc):
            return False

    result = optimizer_step(model, optimizer, [MicroBatch(ids[i:i + 1], None) for i in range(4)], clip=1.0,
                            no_sync=NoSync, reduce_loss=lambda loss: reduced.append(float(loss)) or loss * 2)
    assert len(entered) == 3  # micro-batches 0..2 accumulate locally; the last one syncs
    assert len(reduced) == 1 and result.loss == pytest.approx(2 * reduced[0])  # the reduced value is reported


def distance(model, before: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(model.parameters(), before)))


def test_clip_bounds_the_gradient_and_reports_the_norm_before_it(model_config, ids):
    model = BTLMLMHeadModel(model_config)
    before = [p.detach().clone() for p in model.parameters()]
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)  # the update is exactly the clipped gradient
    result = optimizer_step(model, sgd, [MicroBatch(ids, None)], clip=0.05)
    update = distance(model, before)
    assert result.grad_norm > 0.05 and update == pytest.approx(0.05, rel=1e-3)

    unclipped = BTLMLMHeadModel(model_config)
    unclipped.load_state_dict(dict(zip(dict(model.named_parameters()), before)), strict=False)
    result = optimizer_step(unclipped, torch.optim.SGD(unclipped.parameters(), lr=1.0), [MicroBatch(ids, None)], clip=0)
    update = distance(unclipped, before)
    assert update == pytest.approx(result.grad_norm, rel=1e-3)  # clip <= 0: measured, not clipped


def test_a_non_finite_gradient_skips_the_update(model_config, ids):
    model, optimizer = fresh(model_config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.transformer.h[0].mlp.c_fc.weight.register_hook(lambda g: g * float("nan"))
    result = optimizer_step(model, optimizer, [MicroBatch(ids, None)], clip=1.0)
    assert not result.finite and math.isfinite(result.loss) and not math.isfinite(result.grad_norm)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert not optimizer.state  # AdamW never stepped


def test_each_mup_group_gets_its_scaled_lr(model_config, model_yaml):
    model, optimizer = fresh(model_config, lr=1.0)
    scales = group_lr_scales(optimizer)
    assert sorted(scales) == sorted(g["lr_scale"] for g in model.get_mup_param_groups(1.0, 0.1))
    wide = BTLMLMHeadModel(BTLMConfig.from_yaml(model_yaml, {"n_embd": 64, "n_head": 4, "n_inner": 128}))
    wide_optimizer = torch.optim.AdamW(wide.get_mup_param_groups(1.0, 0.1))
    wide_scales = dict(zip([g["name"] for g in wide_optimizer.param_groups], group_lr_scales(wide_optimizer)))
    assert wide_scales["hidden"] == pytest.approx(0.5) and wide_scales["embeddings"] == 1.0  # base width 32

    schedule = LRSchedule(lr=4e-3, tokens_per_step=1024, warmup_tokens=4096, total_tokens=10 * 1024, decay_to=0.1)
    assert schedule.multiplier(0) == 0.25  # after the first step's tokens, a quarter into the warm-up
    assert schedule.multiplier(9) == pytest.approx(0.1)
    for step in range(10):
        logged = schedule.apply(wide_optimizer, step)
        mult = lr_multiplier((step + 1) * 1024, 4096, 10 * 1024, 0.1)
        assert logged == 4e-3 * mult
        for group in wide_optimizer.param_groups:
            assert group["lr"] == 4e-3 * wide_scales[group["name"]] * mult
    assert set_group_lrs(wide_optimizer, 0.5) == 0.5  # a constant lr, still scaled per group
    assert all(g["lr"] == 0.5 * wide_scales[g["name"]] for g in wide_optimizer.param_groups)
