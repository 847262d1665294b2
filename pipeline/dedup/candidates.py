"""Steps 3 and 4: LSH band keys per input file, then candidate pairs per key partition.

3. bands: one task per input file writes the (band key, document) rows of its
   candidates -- exact-duplicate representatives only -- routed by key partition.
4. lsh: one task per partition groups equal (band, key) rows into buckets and turns
   each bucket into candidate pairs; their documents go, by file, to
   signatures: one task per file sends the signatures asked for back to each partition;
   estimate: one task per partition lets the signature estimate decide the clear pairs;
   with verify=exact the undecided pairs wait for the exact check (verify.py), their
   documents routed to their files for the shingles step.
Every hop is an exchange (exchange.py): no task opens files of every other task.
"""

from __future__ import annotations

import numpy as np

from pipeline.dedup.config import DedupStageConfig, band_layout
from pipeline.dedup.exchange import Piece, read_piece
from pipeline.dedup.layout import Layout, NpyRows, file_of, load_npy, load_npz, save_npy, save_npz
from pipeline.dedup.routed import save_routed
from pipeline.lsh import band_keys, bucket_pairs
from pipeline.minhash import estimate_jaccard

PAIRS_PER_BATCH = 1 << 16  # bounds the signatures gathered at once
BAND_ROW = np.dtype(("<u8", (2,)))  # (band key, dense document id)
REQUEST = np.dtype(("<i8", (2,)))  # (dense document id, the partition that asks for it)
IDS = np.dtype("<i8")


def signature_row(num_perm: int) -> np.dtype:
    return np.dtype([("doc", "<i8"), ("sig", "<u4", (num_perm,))])


def bands_file(cfg: DedupStageConfig, layout: Layout, file_no: int, offsets: np.ndarray,
               nonrep: Piece | None) -> dict:
    """Band keys of one file's exact-duplicate representatives, routed to key partitions."""
    dense = load_npy(layout.signature_docs(file_no)) + offsets[file_no]
    use = load_npy(layout.signature_valid(file_no)).copy()
    if nonrep is not None:  # exact duplicates other than the representative stay out
        use &= ~np.isin(dense, read_piece(nonrep, file_no, IDS))
    bands, rows = band_layout(cfg)
    sigs = load_npy(layout.signatures(file_no), mmap=True)
    keys = band_keys(np.asarray(sigs[use]), bands, rows).ravel()  # [docs * bands]
    docs = np.repeat(dense[use], bands).astype(np.uint64)
    parts = (keys % np.uint64(cfg.run.partitions)).astype(np.int64)
    save_routed(layout.bands(file_no), np.stack((keys, docs), axis=1), parts, cfg.run.partitions)
    return {"documents": int(use.sum())}


def lsh_partition(cfg: DedupStageConfig, layout: Layout, p: int, offsets: np.ndarray, bands: Piece) -> dict:
    """Candidate pairs of partition p. Without verification they are the edges;
    otherwise their documents are asked of their files for signatures."""
    rows = read_piece(bands, p, BAND_ROW)
    pairs = bucket_pairs(rows[:, 0], rows[:, 1].astype(np.int64), cfg.lsh.max_bucket_pairs)
    save_npy(layout.pairs(p), pairs.astype(np.int64))
    if cfg.lsh.verify == "none":
        return {"candidates": int(len(pairs)), "edges": int(len(pairs))}
    docs = np.unique(pairs)
    save_routed(layout.wanted(p), np.stack((docs, np.full(len(docs), p)), axis=1), file_of(offsets, docs),
                len(offsets) - 1)
    return {"candidates": int(len(pairs))}


def signatures_file(cfg: DedupStageConfig, layout: Layout, file_no: int, offsets: np.ndarray, wanted: Piece) -> dict:
    """The signatures of this file's documents that partitions asked for, routed to them."""
    asked = read_piece(wanted, file_no, REQUEST)
    signed = load_npy(layout.signature_docs(file_no)) + offsets[file_no]
    rows, which = np.unique(np.searchsorted(signed, asked[:, 0]), return_inverse=True)
    out = np.empty(len(asked), dtype=signature_row(cfg.minhash.num_perm))
    out["doc"] = asked[:, 0]
    if len(rows):
        reader = NpyRows(layout.signatures(file_no))
        try:
            out["sig"] = reader.rows(rows)[which]
        finally:
            reader.close()
    save_routed(layout.signature_rows(file_no), out, asked[:, 1], cfg.run.partitions)
    return {"documents": int(len(rows))}


def estimate_partition(cfg: DedupStageConfig, layout: Layout, p: int, offsets: np.ndarray, signatures: Piece) -> dict:
    """Decided edges of partition p and, with verify=exact, the undecided pairs (their
    documents routed to their files, with p, for the shingles step)."""
    pairs = load_npy(layout.pairs(p))
    rows = read_piece(signatures, p, signature_row(cfg.minhash.num_perm))
    order = np.argsort(rows["doc"])
    docs, sigs = rows["doc"][order], rows["sig"][order]
    estimate = np.zeros(len(pairs))
    for start in range(0, len(pairs), PAIRS_PER_BATCH):
        chunk = pairs[start : start + PAIRS_PER_BATCH]
        estimate[start : start + PAIRS_PER_BATCH] = estimate_jaccard(sigs[np.searchsorted(docs, chunk[:, 0])],
                                                                     sigs[np.searchsorted(docs, chunk[:, 1])])
    unsure = np.empty((0, 2), dtype=np.int64)
    if cfg.lsh.verify == "estimate":
        keep = estimate >= cfg.lsh.verify_threshold
    else:  # exact: decisive estimates decide now, the rest waits for the exact check
        keep = estimate >= cfg.lsh.estimate_accept
        unsure = pairs[~keep & (estimate >= cfg.lsh.estimate_reject)]
    edges = pairs[keep]
    save_npz(layout.decided(p), edges=edges.astype(np.int64), unsure=unsure.astype(np.int64))
    if cfg.lsh.verify == "exact":
        ids = np.unique(unsure)
        save_routed(layout.unsure(p), np.stack((ids, np.full(len(ids), p)), axis=1), file_of(offsets, ids),
                    len(offsets) - 1)
    return {"candidates": int(len(pairs)), "edges": int(len(edges)), "unsure": int(len(unsure))}


def near_edges(cfg: DedupStageConfig, layout: Layout, p: int) -> np.ndarray:
    """The near-duplicate edges of partition p after verification."""
    if cfg.lsh.verify == "exact":
        return load_npy(layout.verified(p))
    if cfg.lsh.verify == "estimate":
        return load_npz(layout.decided(p), "edges")
    return load_npy(layout.pairs(p))
