"""Step 1 (one task): the evaluation sets' n-gram index.

Every item's distinct n-grams; an n-gram found in more than ``max_eval_items`` items
is boilerplate (a prompt template, a licence line) and left out. What is kept is the
only thing later steps hold in memory: the sorted n-gram hashes (8 bytes each) and
each n-gram's items, so memory is bounded by the evaluation sets, never the corpus.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.atomic import atomic_path
from pipeline.decontaminate.config import DecontaminateConfig
from pipeline.decontaminate.evalsets import load_items
from pipeline.decontaminate.layout import Layout
from pipeline.decontaminate.ngrams import ngram_hashes, word_count
from pipeline.dedup.layout import save_npy, save_npz

ITEMS_SCHEMA = pa.schema([("task", pa.string()), ("index", pa.int64()), ("sha256", pa.string()),
                          ("words", pa.int64()), ("ngrams", pa.int64())])


def build_index(cfg: DecontaminateConfig, layout: Layout) -> dict:
    n = cfg.ngrams.n
    columns: dict[str, list] = {name: [] for name in ITEMS_SCHEMA.names}
    pairs = []  # (hash, item) of each item's distinct n-grams
    items = load_items(cfg.eval_sets, cfg.text_field)
    while batch := list(itertools.islice(items, cfg.run.batch_docs)):
        hashes, doc, _ = ngram_hashes([it.text for it in batch], n)
        first = len(columns["task"])
        pair = np.unique(np.stack([hashes, (doc + first).astype(np.uint64)], axis=1), axis=0)
        pairs.append(pair)
        per_item = np.bincount(pair[:, 1].astype(np.int64) - first, minlength=len(batch))
        for k, it in enumerate(batch):
            for name, value in zip(ITEMS_SCHEMA.names, (it.task, it.index, it.sha256, word_count(it.text), int(per_item[k]))):
                columns[name].append(value)
    if not columns["task"]:
        raise ValueError(f"evaluation sets {cfg.eval_sets} hold no items")
    pair = np.concatenate(pairs)
    pair = pair[np.lexsort((pair[:, 1], pair[:, 0]))]
    grams, starts, counts = np.unique(pair[:, 0], return_index=True, return_counts=True)
    frequent = counts > cfg.ngrams.max_eval_items
    keep = np.repeat(~frequent, counts)
    kept_counts = counts[~frequent]
    offsets = np.concatenate([[0], np.cumsum(kept_counts)]).astype(np.int64)
    save_npy(layout.grams(), grams[~frequent])
    save_npz(layout.postings(), offsets=offsets, items=pair[keep, 1].astype(np.int64))
    with atomic_path(layout.items()) as tmp:
        pq.write_table(pa.table(columns, schema=ITEMS_SCHEMA), tmp)
    return {"items": len(columns["task"]), "ngrams": int(len(grams)), "frequent_in_eval": int(frequent.sum()),
            "too_short": int(sum(w < n for w in columns["words"]))}
