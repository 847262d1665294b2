"""Generation: greedy decoding, sampling filters, end of sequence, and the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import BTLMConfig, BTLMLMHeadModel
from model.generation import filter_logits

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = REPO / "pipeline" / "assets" / "tokenizer.json"
CFG = dict(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2, n_inner=64, initializer_range=0.3,
           mup_base_width=16, mup_embeddings_scale=2.0, mup_output_alpha=2.0, mup_scale_qk_dot_by_d=True)


def tiny(vocab=61):
    torch.manual_seed(0)
    return BTLMLMHeadModel(BTLMConfig(**{**CFG, "vocab_size": vocab})).eval()


def test_greedy_picks_argmax_of_full_forward():
    model = tiny()
    prompt = torch.randint(0, 61, (3, 4), generator=torch.Generator().manual_seed(2))
    out = model.generate(prompt, max_new_tokens=6, temperature=0)
    assert torch.equal(out[:, :4], prompt)
    with torch.no_grad():
        logits = model(out).logits
    assert torch.equal(out[:, 4:], logits[:, 3:-1].argmax(-1))


def test_sampling_is_seeded_and_respects_top_k():
    model = tiny()
    prompt = torch.zeros(2, 3, dtype=torch.long)
    a = model.generate(prompt, 8, temperature=1.5, top_k=3, generator=torch.Generator().manual_seed(5))
    b = model.generate(prompt, 8, temperature=1.5, top_k=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with torch.no_grad():
        logits = model(a).logits[:, 2:-1]
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == a[:, 3:, None]).any(-1).all()


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda out: torch.isfinite(out)[0].tolist()
    assert kept(filter_logits(logits, top_k=2, top_p=None)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_k=None, top_p=0.75)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_k=None, top_p=0.85)) == [True, True, True, False]
    assert kept(filter_logits(logits, top_k=None, top_p=0.1)) == [True, False, False, False]


def test_eos_stops_and_pads():
    model = tiny()
    prompt = torch.randint(0, 61, (2, 4), generator=torch.Generator().manual_seed(3))
    first = model.generate(prompt, 1, temperature=0)[:, -1]
    eos = int(first[0])
    out = model.generate(prompt, 10, temperature=0, eos_token_id=eos)
    assert all(t == eos for t in out[0, 4:].tolist())  # finished row is padded with eos
    if out.shape[1] < 14:  # stopped early: only allowed once every row has finished
        assert (out[:, 4:] == eos).any(dim=1).all()
    else:
        assert not (out[1, 4:] == eos).all()


@pytest.mark.skipif(not TOKENIZER.exists(), reason="project tokenizer not built")
def test_generate_cli_with_project_tokenizer(tmp_path):
    model = tiny(vocab=50257)
    model.save_pretrained(tmp_path / "ckpt")
    cmd = [sys.executable, "-m", "model.sample_text", "--checkpoint", str(tmp_path / "ckpt"),
           "--prompt", "The quick brown fox", "--max-new-tokens", "5", "--temperature", "0"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The quick brown fox")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    ids = tok.encode("The quick brown fox").ids
    expected = model.generate(torch.tensor([ids]), 5, temperature=0, eos_token_id=50256)[0, len(ids):].tolist()
    expected = [t for t in expected if t != 50256]
    assert result.stdout.rstrip("\n") == "The quick brown fox" + tok.decode(expected)
