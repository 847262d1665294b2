"""Continued pre-training of a native StableLM folder, end to end: a tiny StableLM saved by
transformers itself with its own tokenizer (a BPE whose <|endoftext|> is 0, as GPT-NeoX's),
tokens made with that tokenizer (`tokenizer=<the folder>`), `train.pretrain init_from=<the
folder>` for a few steps, the checkpoint exported as native StableLM and loaded back by
`StableLmForCausalLM` in a process that cannot import the project, with the project's logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from common.config import load_config
from model import BTLMLMHeadModel
from model.export.__main__ import main as export_main
from pipeline.shard_format import read_metadata
from pipeline.tokenize import TokenizeConfig, run
from pipeline.tokenizer import tokenizer_sha256
from tests.helpers.hf_support import relative_difference, run_isolated
from tests.helpers.second_tokenizer import EOS_ID, EOS_TOKEN, second_tokenizer  # noqa: F401
from train.checkpoint import latest_checkpoint

transformers = pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
TEXTS = ["The history of the printing press begins in the fifteenth century.",
         "def add(a, b):\n    return a + b  # tabs\tand  spaces\n"]

ISOLATED = """
import json
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, StableLmForCausalLM

spec = json.loads(sys.argv[1])
model = StableLmForCausalLM.from_pretrained(spec["folder"]).eval()
ids = load_file(spec["ids"])["ids"]
with torch.no_grad():
    save_file({"logits": model(ids).logits.contiguous()}, spec["logits"])
tok = AutoTokenizer.from_pretrained(spec["folder"])
print(json.dumps({"class": type(model).__name__, "eos": tok.eos_token_id,
                  "token_ids": [tok(t)["input_ids"] for t in spec["texts"]]}))
"""


def stablelm_folder(root: Path, tokenizer_json: Path) -> Path:
    """A tiny StableLM as transformers saves it, with the second tokenizer saved beside it."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast, StableLmConfig, StableLmForCausalLM

    torch.manual_seed(0)
    config = StableLmConfig(vocab_size=2048, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=4, partial_rotary_factor=0.25,
                            max_position_embeddings=1024, bos_token_id=EOS_ID, eos_token_id=EOS_ID,
                            tie_word_embeddings=False)
    StableLmForCausalLM(config).save_pretrained(root)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(tokenizer_json)), eos_token=EOS_TOKEN,
                                  bos_token=EOS_TOKEN, unk_token=EOS_TOKEN)
    tok.save_pretrained(root)
    return root


def pretrain(run_dir: Path, tokens: Path, init_from: Path) -> Path:
    """`python -m train.pretrain init_from=...`, a few steps at 64 and 256 tokens."""
    overrides = [f"data.root={tokens}", f"init_from={init_from}", f"run_dir={run_dir}",
                 "phases=[{seq_len: 64, fraction: 0.5}, {seq_len: 256, fraction: 0.5}]",
                 "tokens_per_batch=1024", "micro_batch_tokens=512", "total_tokens=6144", "warmup_tokens=1024",
                 "lr=0.003", "eval.every=0", "eval.tokens=1024", "eval.long_context_len=1024",
                 "eval.long_context_sequences=1", "eval.long_context_chunk=256", "eval.long_context_buckets=6",
                 "checkpoint_every=0", "precision=fp32", "compile=false", "num_threads=1", "log.progress=false",
                 "log.tensorboard=false", "sample.tokenizer=null"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "train.pretrain", "--config", "configs/train/demo.yaml", *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    assert checkpoint is not None, proc.stdout[-2000:]
    return checkpoint


def test_continue_pretraining_a_native_stablelm_folder(sample_corpus, second_tokenizer, ray_session, tmp_path):  # noqa: F811
    folder = stablelm_folder(tmp_path / "stablelm", second_tokenizer)
    tokens = tmp_path / "tokens"
    run(load_config(TokenizeConfig, REPO / "configs" / "data" / "tokenize.yaml", [
        f"input={sample_corpus}", f"output={tokens}", f"tokenizer={folder}", "pack.seq_lens=[64,256]",
        "split.validation_fraction=0.1", "run.progress=false"]))
    meta = read_metadata(next(tokens.glob("seq64/train/shard-*.arrow")))
    assert (meta["eos_id"], meta["tokenizer_sha256"]) == (str(EOS_ID), tokenizer_sha256(folder / "tokenizer.json"))

    checkpoint = pretrain(tmp_path / "run", tokens, folder)
    assert (checkpoint / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == 6

    out = tmp_path / "export"
    assert export_main([str(checkpoint), str(out), "--format", "hf", "--layout", "stablelm"]) == 0
    ids = torch.randint(0, 2000, (2, 48), generator=torch.Generator().manual_seed(1))
    save_file({"ids": ids}, str(tmp_path / "ids.safetensors"))
    spec = {"folder": str(out), "ids": str(tmp_path / "ids.safetensors"), "logits": str(tmp_path / "logits.safetensors"),
            "texts": TEXTS}
    result = run_isolated(ISOLATED, spec, cwd=tmp_path)
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    theirs = load_file(spec["logits"])["logits"]
    trained = BTLMLMHeadModel.from_pretrained(str(checkpoint)).eval()
    initial = BTLMLMHeadModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        ours, before = trained(ids).logits, initial(ids).logits
    difference = relative_difference(ours, theirs)
    print(f"exported StableLM vs project logits: max |diff| / max |logit| = {difference:.2e}")
    assert result["class"] == "StableLmForCausalLM" and result["eos"] == EOS_ID
    assert difference <= 1e-5
    assert relative_difference(before, ours) > 1e-3  # the steps changed the model
    reference = Tokenizer.from_file(str(second_tokenizer))
    assert result["token_ids"] == [reference.encode(t).ids for t in TEXTS]
