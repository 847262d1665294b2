"""Word n-grams of normalized text, their places in the original text, and redaction.

Normalization is the GPT-3 / lm-evaluation-harness janitor's: lowercase, ASCII
punctuation removed, split on whitespace (``pipeline.normalize.clean_text``, the same
``clean`` SlimPajama's filters use). An n-gram is ``n`` consecutive normalized words,
hashed to 64 bits with the dedup stage's vectorised word hashing
(``pipeline.shingles``), so equal n-grams get equal hashes in every process.
A text with fewer than ``n`` words has no n-gram (it can neither match nor be matched).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from pipeline.normalize import clean_text
from pipeline.shingles import shingle_hashes

_TOKEN = re.compile(r"\S+")  # str.split()'s words, with their places


def ngram_hashes(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every n-gram of every text: ``(hashes, text index, word position)``, by text then position."""
    cleaned = [clean_text(t) for t in texts]
    counts = np.fromiter((len(c.split()) for c in cleaned), dtype=np.int64, count=len(cleaned))
    hashes, doc = shingle_hashes(cleaned, n, "word")
    windows = np.maximum(counts - n + 1, 0)
    keep = np.repeat(windows > 0, np.where(windows > 0, windows, (counts > 0).astype(np.int64)))
    hashes, doc = hashes[keep], doc[keep]  # texts shorter than n: their one whole-text shingle goes
    starts = np.cumsum(windows) - windows
    position = np.arange(len(doc), dtype=np.int64) - starts[doc]
    return hashes, doc, position


def word_count(text: str) -> int:
    return len(clean_text(text).split())


def word_spans(text: str) -> np.ndarray:
    """(start, end) character offsets in ``text`` of each normalized word, in order: the
    whitespace-separated tokens that keep a character after normalization."""
    spans = [(m.start(), m.end()) for m in _TOKEN.finditer(text) if clean_text(m.group())]
    return np.array(spans, dtype=np.int64).reshape(-1, 2)


def redact(text: str, positions: np.ndarray, n: int, window: int) -> list[str]:
    """The janitor's cut: each matched n-gram (word ``positions``) removed together with
    ``window`` characters on each side; returns the non-empty pieces left, in order
    (the caller drops short ones and counts them against the too-dirty limit)."""
    if len(positions) == 0:
        return [text]
    spans = word_spans(text)
    cuts = np.stack([spans[positions, 0] - window, spans[positions + n - 1, 1] + window], axis=1)
    cuts = cuts[np.argsort(cuts[:, 0], kind="stable")]
    pieces, at = [], 0
    for start, end in cuts.tolist():
        if start > at:
            pieces.append(text[at:start])
        at = max(at, end)
    pieces.append(text[at:])
    return [p for p in pieces if p.strip()]
