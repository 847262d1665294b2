"""Which tokenizer, EOS id and id type a `tokenizer=` setting gives, and the clear errors of
the ones that cannot work (no Ray; the second BPE is a small one trained here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.config import load_config
from model.checkpoint.tokenizer import TokenizerMismatch, eos_token, write_tokenizer_files
from model.config import BTLMConfig
from pipeline.shard_format import token_dtype
from pipeline.tokenize import TokenizeConfig
from pipeline.tokenizer import TOKENIZER_PATH, Encoder, describe_tokenizer, resolve_encoder

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Tokens come from one tokenizer only.", "def f(x):\n    return x  # <|endoftext|> is text here\n"]


@pytest.fixture(scope="module")
def small_bpe(tmp_path_factory) -> Path:
    """A byte-level BPE of 300 tokens with <|endoftext|> = 0 and </s> = 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([p.read_text(encoding="utf-8") for p in sorted(REPO.glob("pipeline/*.py"))], trainer)
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_gpt2_is_the_default():
    info = describe_tokenizer(None)
    assert (info.eos_id, info.vocab_size, info.gpt2, info.dtype) == (50256, 50257, True, np.dtype(np.uint16))
    assert Path(info.path) == TOKENIZER_PATH.resolve()


def test_a_file_names_its_eos_by_endoftext_and_a_folder_by_its_config(small_bpe, tmp_path):
    info = describe_tokenizer(small_bpe)
    assert (info.eos_id, info.vocab_size, info.gpt2) == (0, 300, False)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes(small_bpe.read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}}))
    assert describe_tokenizer(folder).eos_id == 1  # tokenizer_config.json's eos_token
    (folder / "config.json").write_text(json.dumps({"eos_token_id": 0}))
    assert describe_tokenizer(folder).eos_id == 0  # config.json's eos_token_id comes first


def test_encoder_appends_the_tokenizers_own_eos(small_bpe):
    from tokenizers import Tokenizer

    flat, lengths = Encoder("auto", small_bpe).encode_with_eos(TEXTS)
    reference = Tokenizer.from_file(str(small_bpe))
    reference.encode_special_tokens = True
    want = [i for t in TEXTS for i in reference.encode(t).ids + [0]]
    assert flat.dtype == np.uint16 and flat.tolist() == want and lengths.sum() == len(want)
    assert (flat == 0).sum() == len(TEXTS)  # the literal <|endoftext|> in the text is text


def test_bad_choices_are_refused_with_the_reason(small_bpe, tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json in that folder"):
        describe_tokenizer(tmp_path)
    no_eos = json.loads(small_bpe.read_text())
    no_eos["added_tokens"] = [t for t in no_eos["added_tokens"] if t["content"] != "<|endoftext|>"]
    del no_eos["model"]["vocab"]["<|endoftext|>"]
    (tmp_path / "no-eos.json").write_text(json.dumps(no_eos))
    with pytest.raises(ValueError, match="no <\\|endoftext\\|> token; pass the model folder"):
        describe_tokenizer(tmp_path / "no-eos.json")
    with pytest.raises(ValueError, match="tiktoken encodes only the committed GPT-2 BPE"):
        resolve_encoder("tiktoken", gpt2=False)
    assert resolve_encoder("auto", gpt2=False) == "tokenizers"
    with pytest.raises(ValueError, match="formats must be .* got \\['arrow', 'parquet'\\]"):
        load_config(TokenizeConfig, REPO / "configs" / "data" / "tokenize.yaml", ["formats=[arrow,parquet]"])


def test_id_type_follows_the_vocabulary():
    assert token_dtype(50257) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(151_936) == np.uint32


def test_checkpoint_tokenizer_files_name_the_models_eos(small_bpe, tmp_path):
    config = BTLMConfig(vocab_size=320, n_positions=64, n_embd=32, n_layer=1, n_head=2, n_inner=64,
                        bos_token_id=0, eos_token_id=0)
    assert eos_token(small_bpe, config) == "<|endoftext|>"
    write_tokenizer_files(tmp_path, small_bpe, config)
    written = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert written["eos_token"] == "<|endoftext|>" and written["tokenizer_class"] == "GPT2TokenizerFast"
    assert list(written["added_tokens_decoder"]) == ["0"]
    with pytest.raises(TokenizerMismatch, match="<\\|endoftext\\|> is id 0, the model's eos_token_id is 1"):
        eos_token(small_bpe, BTLMConfig(**{**config.to_dict(), "eos_token_id": 1}))
    with pytest.raises(TokenizerMismatch, match="300 tokens, more than the model's vocab_size 256"):
        eos_token(small_bpe, BTLMConfig(**{**config.to_dict(), "vocab_size": 256}))
