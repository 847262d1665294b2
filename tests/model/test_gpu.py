"""On CUDA: FlexAttention ALiBi and document masks against the float64 reference (forward and
backward, bf16 and fp32), the model's bf16 training step against fp32, cached decoding, and
NCCL data parallelism on two GPUs. Skipped without CUDA devices (the ``gpu`` marker)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import BTLMConfig, BTLMLMHeadModel
from model.attention import flex
from model.attention.positions import alibi_slopes
from model.attention.sdpa import alibi_causal_attention
from tests.model.test_attention_kernels import reference_attention
from tests.model.test_model_attention import TINY

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def inputs(B, H, T, D, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g).to(CUDA, dtype).requires_grad_() for _ in range(3)]


def check_against_reference(got_fn, q, k, v, slopes, segments, atol):
    weight = torch.randn_like(q, dtype=torch.float32)
    out = got_fn(q, k, v)
    (out.float() * weight).sum().backward()
    q64, k64, v64 = (t.detach().cpu().double().requires_grad_() for t in (q, k, v))
    seg = None if segments is None else segments.cpu()
    exact = reference_attention(q64, k64, v64, slopes.double().cpu(), 1 / q.shape[-1], seg)
    (exact * weight.double().cpu()).sum().backward()
    torch.testing.assert_close(out.double().cpu(), exact, rtol=atol, atol=atol)
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        torch.testing.assert_close(got.double().cpu(), want, rtol=10 * atol, atol=10 * atol)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-4), (torch.bfloat16, 2e-2)])
def test_flex_alibi_causal_and_documents_match_reference(dtype, atol):
    B, H, T, D = 2, 4, 1024, 64
    slopes = torch.tensor(alibi_slopes(H), device=CUDA)
    segments = torch.zeros(B, T, dtype=torch.long, device=CUDA)
    segments[0, 300:] += 1
    segments[0, 310:] += 1
    segments[1, 700:] += 1
    for seg in (None, segments):
        q, k, v = inputs(B, H, T, D, dtype)
        mask = flex.block_mask(T, T, CUDA, seg)
        check_against_reference(lambda q, k, v: flex.flex_attention(q, k, v, slopes, 1 / D, mask),
                                q, k, v, slopes, seg, atol)


def test_sdpa_fused_alibi_bf16_matches_reference():
    B, H, T, D = 1, 4, 1536, 64
    slopes = torch.tensor(alibi_slopes(H), device=CUDA)
    q, k, v = inputs(B, H, T, D, torch.bfloat16, seed=1)
    check_against_reference(lambda q, k, v: alibi_causal_attention(q, k, v, slopes, 1 / D),
                            q, k, v, slopes, None, 2e-2)


def tiny_model():
    torch.manual_seed(0)  # head size 32: FlexAttention's kernels want 16 or more
    return BTLMLMHeadModel(BTLMConfig(**{**TINY, "n_positions": 2048, "n_embd": 64, "n_head": 2, "n_inner": 128,
                                         "mup_base_width": 32}))


def test_bf16_training_step_on_cuda_matches_fp32_on_cpu():
    ids = torch.randint(0, TINY["vocab_size"], (2, 1024), generator=torch.Generator().manual_seed(2))
    cpu = tiny_model()
    gpu = tiny_model().to(CUDA)
    ref = cpu(ids, labels=ids, return_logits=False).loss
    ref.backward()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = gpu(ids.to(CUDA), labels=ids.to(CUDA), return_logits=False).loss
    loss.backward()
    assert gpu.transformer.attention_context(1024, 0, None, torch.zeros(1, device=CUDA)).kernel == "flex"
    assert loss.item() == pytest.approx(ref.item(), rel=2e-2)
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        cos = torch.nn.functional.cosine_similarity(p_cpu.grad.flatten(), p_gpu.grad.float().cpu().flatten(), dim=0)
        assert cos > 0.98, name


def test_cached_generation_on_cuda_matches_the_full_forward():
    model = tiny_model().to(CUDA).eval()
    prompt = torch.randint(0, TINY["vocab_size"], (2, 600), generator=torch.Generator().manual_seed(3)).to(CUDA)
    tokens, scores = model.generate(prompt, max_new_tokens=6, temperature=0.0, return_scores=True)
    with torch.no_grad():
        full = model(tokens[:, :-1]).logits[:, 599:]
    torch.testing.assert_close(scores, full, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu(devices=2)
@pytest.mark.slow
def test_nccl_data_parallel_matches_one_process(tmp_path):
    from tests.helpers.train_support import REPO, tiny_config, write_token_dir
    from tests.train.test_train_loop import train_losses, write_yaml

    tokens = write_token_dir(tmp_path / "tokens")
    settings = dict(total_tokens=1024 * 4, eval={"every": 0}, checkpoint_every=0, precision="bf16")
    runs = {}
    for name, procs in (("one", 1), ("two", 2)):
        config = tiny_config(tmp_path / name, tokens, **settings)
        path = write_yaml(config, tmp_path / f"{name}.yaml")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               "-m", "train.pretrain", "--config", str(path)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs[name] = train_losses(Path(config.run_dir))
    assert sorted(runs["one"]) == sorted(runs["two"]) == list(range(1, 5))
    for step, loss in runs["one"].items():
        assert runs["two"][step] == pytest.approx(loss, rel=2e-2), step
