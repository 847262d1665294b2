"""A four-way continuation task built from the project's own holdout split (no download).

Each item is a window of a validation document: its first ``context_tokens`` as the
context and four candidate continuations, the document's own next ``continuation_tokens``
and three wrong ones. lm-evaluation-harness scores each candidate by its log-likelihood
after the context (chance: 25%). By default the wrong ones are the same words in other
orders, so every candidate has the same words and length and only a model that has learnt
how text goes on (word order, the join with the context) beats chance; with
``distractors: other_documents`` they are continuations of other documents, a harder,
topic-level test for larger models. Items are a pure function of the shards and the
settings (seeded), so two runs of the same checkpoint score the same items.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.storage import write_text
from train.data import ShardSet, expected_metadata

EOS_ID = 50256
DISTRACTORS = ("shuffled_words", "other_documents")
WORD = re.compile(r"\s*\S+")


@dataclass
class HoldoutSection:
    data_root: str  # output folder of `make tokenize`
    seq_len: int  # which packing of the split to read
    split: str
    context_tokens: int
    continuation_tokens: int
    windows_per_document: int  # non-overlapping windows from the start of each document
    max_items: int
    choices: int
    seed: int
    # shuffled_words: the wrong continuations are the true one's words in other orders (what a
    # model must know is word order in context); other_documents: continuations of other documents.
    distractors: str = "shuffled_words"

    def __post_init__(self) -> None:
        if self.choices < 2:
            raise ValueError(f"choices must be >= 2, got {self.choices}")
        if min(self.context_tokens, self.continuation_tokens, self.windows_per_document, self.max_items) < 1:
            raise ValueError("context_tokens, continuation_tokens, windows_per_document and max_items must be >= 1")


def build_items(cfg: HoldoutSection, decode, tokenizer_sha256: str | None = None) -> list[dict[str, Any]]:
    """The task's documents: ``{"context", "choices", "label", "doc"}`` dicts.

    ``decode`` turns token ids into text (the tokenizer of the shards).
    """
    if cfg.distractors not in DISTRACTORS:
        raise ValueError(f"distractors must be one of {DISTRACTORS}, got {cfg.distractors!r}")
    shards = ShardSet(cfg.data_root, cfg.seq_len, cfg.split, expected_metadata(EOS_ID, tokenizer_sha256))
    rows = shards.tokens(np.arange(len(shards)))
    P, C = cfg.context_tokens, cfg.continuation_tokens
    # Remember which document each window came from, so distractors come from other documents.
    windows, owners = [], []
    for doc_index, row_windows in enumerate(document_windows(rows, P + C, cfg.windows_per_document)):
        windows += row_windows
        owners += [doc_index] * len(row_windows)
    if len(set(owners)) < cfg.choices:
        raise ValueError(f"{shards.folder}: only {len(set(owners))} documents with {P + C}+ tokens; "
                         f"{cfg.choices} are needed for {cfg.choices} choices")
    rng = np.random.default_rng(cfg.seed)
    owners_arr = np.array(owners)
    items = []
    for w in rng.permutation(len(windows)):
        true = decode(windows[w][P:].tolist())
        if cfg.distractors == "shuffled_words":
            wrong = shuffled_words(true, cfg.choices - 1, rng)
            if wrong is None:  # too few words to make distinct orders: skip the window
                continue
        else:
            others = rng.choice(np.flatnonzero(owners_arr != owners_arr[w]), size=cfg.choices - 1, replace=False)
            wrong = [decode(windows[int(o)][P:].tolist()) for o in others]
        candidates = [true, *wrong]
        order = rng.permutation(cfg.choices)
        items.append({"doc": len(items), "context": decode(windows[w][:P].tolist()),
                      "choices": [candidates[j] for j in order], "label": int(np.flatnonzero(order == 0)[0])})
        if len(items) == cfg.max_items:
            break
    return items


def shuffled_words(text: str, count: int, rng: np.random.Generator, tries: int = 50) -> list[str] | None:
    """``count`` distinct reorderings of the words of ``text`` (each keeps its leading
    whitespace), none equal to ``text``; None when the text has too few words to reorder."""
    words = WORD.findall(text)
    tail = text[len("".join(words)):]
    # A first piece without leading space ends the context's last word: it stays in place.
    head = words.pop(0) if words and not words[0][:1].isspace() else ""
    found: list[str] = []
    for _ in range(tries):
        candidate = head + "".join(words[i] for i in rng.permutation(len(words))) + tail
        if candidate != text and candidate not in found:
            found.append(candidate)
            if len(found) == count:
                return found
    return None


def document_windows(rows: np.ndarray, window: int, per_document: int) -> list[list[np.ndarray]]:
    """Per document that starts inside a row (after an EOS): up to ``per_document``
    consecutive windows of ``window`` ids from its start, in row order."""
    groups = []
    for row in rows:
        eos = np.flatnonzero(row == EOS_ID)
        for start, end in zip(eos + 1, np.append(eos[1:], len(row))):
            count = min(per_document, int(end - start) // window)
            if count:
                groups.append([row[start + i * window : start + (i + 1) * window] for i in range(count)])
    return groups


def write_items(items: list[dict[str, Any]], path: Path) -> Path:
    return write_text(path, "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items))
