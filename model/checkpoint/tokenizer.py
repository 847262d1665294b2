"""The tokenizer files of a Hugging Face model folder, so ``AutoTokenizer`` gives the ids the model was trained on.

``tokenizer.json`` is copied byte for byte from the tokenizer the shards were made with
(the project's GPT-2 BPE, or the model's own, e.g. GPT-NeoX's for StableLM);
``tokenizer_config.json`` and ``special_tokens_map.json`` name the model's EOS token
(``<|endoftext|>`` for GPT-2, BTLM and StableLM) as bos, eos and unk, the way those models
ship it. The model package never reads the pipeline's files itself: callers pass the path.
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


def _token_ids(tokenizer_json: str | Path) -> tuple[dict[str, int], dict]:
    """Every token's id (vocabulary and added tokens) of a tokenizer.json, read without building it."""
    path = Path(tokenizer_json)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ids = dict(data["model"]["vocab"])
        for token in data.get("added_tokens") or []:
            ids[token["content"]] = token["id"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TokenizerMismatch(f"{path}: not a tokenizers tokenizer.json ({exc})") from None
    return ids, data


def eos_token(tokenizer_json: str | Path, config: BTLMConfig) -> str:
    """The token the model ends documents with, checked to fit the model.

    A tokenizer with ``<|endoftext|>`` must have it at the model's ``eos_token_id``
    (GPT-2: 50256, GPT-NeoX / StableLM: 0); any other names the model's EOS by id.
    """
    ids, _ = _token_ids(tokenizer_json)
    size = max(ids.values()) + 1
    if size > config.vocab_size:
        raise TokenizerMismatch(f"{tokenizer_json}: {size} tokens, more than the model's vocab_size {config.vocab_size}")
    if EOS_TOKEN in ids:
        if ids[EOS_TOKEN] != config.eos_token_id:
            raise TokenizerMismatch(f"{tokenizer_json}: {EOS_TOKEN} is id {ids[EOS_TOKEN]}, "
                                    f"the model's eos_token_id is {config.eos_token_id}")
        return EOS_TOKEN
    names = [name for name, i in ids.items() if i == config.eos_token_id]
    if not names:
        raise TokenizerMismatch(f"{tokenizer_json}: no token has the model's eos_token_id {config.eos_token_id}")
    return names[0]


def check_fits(tokenizer_json: str | Path, config: BTLMConfig) -> None:
    eos_token(tokenizer_json, config)


def tokenizer_class(tokenizer_json: str | Path) -> str:
    """GPT-2's fast class for byte-level BPE (GPT-2, GPT-NeoX), the generic fast class otherwise."""
    _, data = _token_ids(tokenizer_json)
    pre = data.get("pre_tokenizer") or {}
    kinds = [pre.get("type")] + [p.get("type") for p in pre.get("pretokenizers") or [] if isinstance(p, dict)]
    return "GPT2TokenizerFast" if "ByteLevel" in kinds else "PreTrainedTokenizerFast"


def tokenizer_config(config: BTLMConfig, eos: str = EOS_TOKEN, cls: str = "GPT2TokenizerFast") -> dict[str, Any]:
    return {
        "tokenizer_class": cls,
        "bos_token": eos,
        "eos_token": eos,
        "unk_token": eos,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": config.n_positions,
        "model_input_names": ["input_ids", "attention_mask"],
        "added_tokens_decoder": {
            str(config.eos_token_id): {"content": eos, "lstrip": False, "normalized": True, "rstrip": False,
                                       "single_word": False, "special": True},
        },
    }


def write_tokenizer_files(directory: str | Path, tokenizer_json: str | Path, config: BTLMConfig) -> list[str]:
    """Copy ``tokenizer_json`` into ``directory`` with its config files; the names written."""
    directory, source = Path(directory), Path(tokenizer_json)
    eos = eos_token(source, config)
    write_bytes(directory / TOKENIZER_NAME, source.read_bytes())
    write_json(directory / TOKENIZER_CONFIG_NAME, tokenizer_config(config, eos, tokenizer_class(source)), indent=2)
    write_json(directory / SPECIAL_TOKENS_NAME, {"bos_token": eos, "eos_token": eos, "unk_token": eos}, indent=2)
    return list(TOKENIZER_FILES)


def has_tokenizer_files(directory: str | Path) -> bool:
    return all((Path(directory) / name).is_file() for name in TOKENIZER_FILES)
