"""Step 2, one task per corpus file: which evaluation n-grams each document holds.

Documents are hashed in batches (``ngram_hashes``) and looked up in the sorted
evaluation n-grams by binary search; only the hits are kept: (document, word
position, n-gram number). The task holds the evaluation n-grams (memory-mapped) and
one batch of documents.
"""

from __future__ import annotations

import itertools

import numpy as np

from pipeline.corpus_io import Rejected, SourceFile, iter_file
from pipeline.decontaminate.config import DecontaminateConfig
from pipeline.decontaminate.layout import Layout
from pipeline.decontaminate.ngrams import ngram_hashes
from pipeline.dedup.layout import load_npy, save_npz


def lookup(grams: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in ``hashes`` found in the sorted ``grams``, their n-gram numbers)."""
    if len(grams) == 0 or len(hashes) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    at = np.searchsorted(grams, hashes)
    at[at == len(grams)] = 0
    hit = np.flatnonzero(grams[at] == hashes)
    return hit, at[hit]


def scan_file(cfg: DecontaminateConfig, layout: Layout, file_no: int, sf: SourceFile) -> dict:
    grams = load_npy(layout.grams(), mmap=True)
    docs, pos, gram = [], [], []
    count = 0
    items = enumerate(iter_file(sf))
    while batch := list(itertools.islice(items, cfg.run.batch_docs)):
        texts = [(local, it.text) for local, it in batch if not isinstance(it, Rejected)]
        count += len(batch)
        if not texts:
            continue
        hashes, doc, position = ngram_hashes([t for _, t in texts], cfg.ngrams.n)
        hit, number = lookup(grams, hashes)
        docs.append(np.array([local for local, _ in texts], dtype=np.int64)[doc[hit]])
        pos.append(position[hit])
        gram.append(number)
    cat = lambda parts: np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)  # noqa: E731
    save_npz(layout.matches(file_no), doc=cat(docs), pos=cat(pos), gram=cat(gram))
    return {"docs": count, "matched_docs": int(len(np.unique(cat(docs))))}
