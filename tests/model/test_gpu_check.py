"""The CPU side of bench/gpu_check.sh: the throughput/MFU helper's JSON lines on a tiny model,
and a clear refusal when there is no CUDA device."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers.train_support import REPO


def load_helper():
    spec = importlib.util.spec_from_file_location("gpu_throughput", REPO / "bench" / "gpu_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_helper_prints_one_json_line_per_length_with_mfu(capsys):
    helper = load_helper()
    assert helper.main(["--model", "tiny", "--device", "cpu", "--precision", "fp32", "--seq-lens", "64,600",
                        "--tokens", "600", "--steps", "1", "--warmup", "1", "--peak-tflops", "0.5"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq_len"] for r in lines] == [64, 600] and [r["batch"] for r in lines] == [9, 1]
    for r in lines:
        model = helper.build("tiny", torch.device("cpu"))
        assert r["parameters"] == model.num_parameters() and r["precision"] == "fp32" and not r["compiled"]
        assert r["tokens_per_s"] == pytest.approx(r["batch"] * r["seq_len"] / r["step_s"])
        assert r["tflops"] == pytest.approx(model.flops_per_token(r["seq_len"]) * r["tokens_per_s"] / 1e12)
        assert r["mfu"] == pytest.approx(r["tflops"] / 0.5) and r["peak_tflops"] == 0.5
        assert 0 < r["loss"] < 12  # ln(50257) = 10.8 at initialization
    assert [r["attention"] for r in lines] == ["mask", "alibi"]  # explicit mask when short, mask-free when long


def test_the_1_3b_model_is_btlm_3b_recipe_at_width_2048_with_its_parameter_count():
    helper = load_helper()
    with torch.device("meta"):
        model = helper.build("1.3b", torch.device("meta"))
    c = model.config
    assert (c.n_embd, c.n_layer, c.n_embd // c.n_head) == (2048, 24, 128)
    assert (c.activation_function, c.position_embedding_type, c.vocab_size) == ("swiglu", "alibi", 50257)
    # GPT-2 layout with biases everywhere, SwiGLU's two input matrices, tied output: counted by hand.
    d, inner = c.n_embd, c.n_inner
    layer = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + 2 * (d * inner + inner) + (inner * d + d)
    assert model.num_parameters() == c.vocab_size * d + c.n_layer * layer + 2 * d == 1_311_545_328


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_refuses_clearly_without_cuda():
    env = {**os.environ, "PY": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr
