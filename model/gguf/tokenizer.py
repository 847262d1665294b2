"""The tokenizer inside a GGUF file: a GPT-2 byte-level BPE ``tokenizer.json`` as llama.cpp's ``gpt2`` vocab.

llama.cpp rebuilds the tokenizer from ``tokenizer.ggml.tokens`` (one string per id, in the
byte-level alphabet), ``token_type``, ``merges`` ("a b" per rank) and the pre-tokenizer name:
``gpt-2`` selects GPT-2's split regex. Ids the tokenizer does not use (a vocabulary padded to
a multiple of 64, as StableLM's 50304) become ``[PAD<id>]`` tokens of type UNUSED, so the
token list always has one entry per embedding row.
"""

from __future__ import annotations

import json
from pathlib import Path

from gguf import TokenType

from model.gguf.layout import GGUFExportError


def read_vocab(path: Path, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) of a byte-level BPE tokenizer.json padded to ``vocab_size``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GGUFExportError(f"tokenizer {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise GGUFExportError(f"{path}: not valid JSON: {exc}") from None
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise GGUFExportError(f"{path}: model.type is {model.get('type')!r}; llama.cpp's gpt2 vocab needs a BPE tokenizer")
    pre = data.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise GGUFExportError(
            f"{path}: pre_tokenizer is {pre!r}; the GGUF pre-tokenizer 'gpt-2' is GPT-2's byte-level split"
        )
    by_id: dict[int, tuple[str, int]] = {i: (tok, TokenType.NORMAL) for tok, i in model["vocab"].items()}
    for added in data.get("added_tokens", []):
        kind = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
    if max(by_id) >= vocab_size:
        raise GGUFExportError(
            f"{path}: token id {max(by_id)} does not fit the model's vocab_size={vocab_size}"
        )
    tokens, types = [], []
    for i in range(vocab_size):
        tok, kind = by_id.get(i, (f"[PAD{i}]", TokenType.UNUSED))
        tokens.append(tok)
        types.append(int(kind))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges


def add_tokenizer(writer, path: Path, vocab_size: int, bos_token_id: int, eos_token_id: int) -> None:
    tokens, types, merges = read_vocab(path, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(bos_token_id)
    writer.add_eos_token_id(eos_token_id)
    # The project never prepends BOS or appends EOS to a prompt; llama.cpp should not either.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
