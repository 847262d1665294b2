"""The tokenizer files of a Hugging Face model folder, so ``AutoTokenizer`` gives the ids the model was trained on.

``tokenizer.json`` is copied byte for byte from the tokenizer the shards were made with
(the project's GPT-2 BPE); ``tokenizer_config.json`` and ``special_tokens_map.json`` name
``<|endoftext|>`` as bos, eos and unk, the way GPT-2 and BTLM ship it. The model package
never reads the pipeline's files itself: callers pass the path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from common.atomic import write_bytes, write_json
from model.config import BTLMConfig

TOKENIZER_NAME = "tokenizer.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_NAME = "special_tokens_map.json"
TOKENIZER_FILES = (TOKENIZER_NAME, TOKENIZER_CONFIG_NAME, SPECIAL_TOKENS_NAME)
EOS_TOKEN = "<|endoftext|>"


class TokenizerMismatch(ValueError):
    """The tokenizer does not fit the model (vocabulary size or special token ids differ)."""


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def special_token_ids(tokenizer_json: str | Path) -> tuple[int, int]:
    """(vocabulary size, id of ``<|endoftext|>``) of a tokenizer.json, read without building it."""
    path = Path(tokenizer_json)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab = data["model"]["vocab"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TokenizerMismatch(f"{path}: not a tokenizers tokenizer.json ({exc})") from None
    ids = dict(vocab)
    for token in data.get("added_tokens") or []:
        ids[token["content"]] = token["id"]
    if EOS_TOKEN not in ids:
        raise TokenizerMismatch(f"{path}: has no {EOS_TOKEN} token")
    return max(ids.values()) + 1, ids[EOS_TOKEN]


def check_fits(tokenizer_json: str | Path, config: BTLMConfig) -> None:
    size, eos = special_token_ids(tokenizer_json)
    if size > config.vocab_size:
        raise TokenizerMismatch(f"{tokenizer_json}: {size} tokens, more than the model's vocab_size {config.vocab_size}")
    if eos != config.eos_token_id:
        raise TokenizerMismatch(f"{tokenizer_json}: {EOS_TOKEN} is id {eos}, the model's eos_token_id is {config.eos_token_id}")


def tokenizer_config(config: BTLMConfig) -> dict[str, Any]:
    return {
        "tokenizer_class": "GPT2TokenizerFast",
        "bos_token": EOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": config.n_positions,
        "model_input_names": ["input_ids", "attention_mask"],
        "added_tokens_decoder": {
            str(config.eos_token_id): {"content": EOS_TOKEN, "lstrip": False, "normalized": True, "rstrip": False,
                                       "single_word": False, "special": True},
        },
    }


def write_tokenizer_files(directory: str | Path, tokenizer_json: str | Path, config: BTLMConfig) -> list[str]:
    """Copy ``tokenizer_json`` into ``directory`` with its config files; the names written."""
    directory, source = Path(directory), Path(tokenizer_json)
    check_fits(source, config)
    write_bytes(directory / TOKENIZER_NAME, source.read_bytes())
    write_json(directory / TOKENIZER_CONFIG_NAME, tokenizer_config(config), indent=2)
    write_json(directory / SPECIAL_TOKENS_NAME,
               {"bos_token": EOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN}, indent=2)
    return list(TOKENIZER_FILES)


def has_tokenizer_files(directory: str | Path) -> bool:
    return all((Path(directory) / name).is_file() for name in TOKENIZER_FILES)
