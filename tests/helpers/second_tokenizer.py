"""A second tokenizer, different from GPT-2's: a byte-level BPE of 2,000 tokens trained by
``tokenizers`` on the sample corpus, with ``<|endoftext|>`` = 0 as in GPT-NeoX (StableLM).

Import the fixture into a test module: ``from tests.helpers.second_tokenizer import second_tokenizer``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.corpus_io import Document, read_corpus

EOS_TOKEN = "<|endoftext|>"
EOS_ID = 0
VOCAB_SIZE = 2000


def corpus_texts(corpus: Path) -> list[str]:
    return [item.text for item in read_corpus(corpus) if isinstance(item, Document)]


def train_second_tokenizer(corpus: Path, out: Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """Train the BPE on the corpus' texts and save it as ``out`` (a tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus_texts(corpus), trainer=trainer)
    assert tokenizer.token_to_id(EOS_TOKEN) == EOS_ID and tokenizer.get_vocab_size() == vocab_size
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out))
    return out


@pytest.fixture(scope="session")
def second_tokenizer(sample_corpus, tmp_path_factory) -> Path:
    """tokenizer.json of the second BPE (EOS = 0, 2,000 tokens)."""
    return train_second_tokenizer(sample_corpus, tmp_path_factory.mktemp("second-tokenizer") / "tokenizer.json")
