"""Steps 3 and 4: LSH band keys per input file, then candidate pairs per key partition.

3. bands: one task per input file writes the (band key, document) rows of its
   candidates -- exact-duplicate representatives only -- routed by key partition.
4. lsh: one task per partition groups equal (band, key) rows into buckets, turns each
   bucket into candidate pairs and lets the signature estimate decide the clear cases;
   with verify=exact the undecided pairs wait for the exact check (verify.py), their
   documents routed to their files for the shingles step.
"""

from __future__ import annotations

import numpy as np

from pipeline.dedup.config import DedupStageConfig, band_layout
from pipeline.dedup.exchange import Piece, read_piece
from pipeline.dedup.layout import Layout, NpyRows, file_of, load_npy, load_npz, save_npz, save_routed
from pipeline.lsh import band_keys, bucket_pairs
from pipeline.minhash import estimate_jaccard

PAIRS_PER_BATCH = 1 << 16  # bounds the signatures gathered at once
BAND_ROW = np.dtype(("<u8", (2,)))  # (band key, dense document id)
IDS = np.dtype("<i8")


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


class SignatureStore:
    """Signatures of any documents, read row by row from the files that hold them (so a
    task holds the rows it asked for, not the pages of every file it touched)."""

    def __init__(self, layout: Layout, offsets: np.ndarray):
        self.layout = layout
        self.offsets = offsets
        self._files: dict[int, tuple[np.ndarray, NpyRows]] = {}

    def __enter__(self) -> "SignatureStore":
        return self

    def __exit__(self, *exc) -> None:
        for _, reader in self._files.values():
            reader.close()
        self._files.clear()

    def _file(self, file_no: int) -> tuple[np.ndarray, NpyRows]:
        if file_no not in self._files:
            dense = load_npy(self.layout.signature_docs(file_no)) + self.offsets[file_no]
            self._files[file_no] = (dense, NpyRows(self.layout.signatures(file_no)))
        return self._files[file_no]

    def get(self, dense: np.ndarray, num_perm: int) -> np.ndarray:
        out = np.empty((len(dense), num_perm), dtype=np.uint32)
        files = file_of(self.offsets, dense)
        for f in np.unique(files):
            sel = np.nonzero(files == f)[0]
            ids, reader = self._file(int(f))
            out[sel] = reader.rows(np.searchsorted(ids, dense[sel]))
        return out


def lsh_partition(cfg: DedupStageConfig, layout: Layout, p: int, offsets: np.ndarray, bands: Piece) -> dict:
    """Candidate pairs of partition p; decided edges and (verify=exact) undecided pairs."""
    rows = read_piece(bands, p, BAND_ROW)
    pairs = bucket_pairs(rows[:, 0], rows[:, 1].astype(np.int64), cfg.lsh.max_bucket_pairs)
    edges = pairs
    unsure = np.empty((0, 2), dtype=np.int64)
    if cfg.lsh.verify != "none" and len(pairs):
        with SignatureStore(layout, offsets) as store:
            estimate = signature_estimates(store, pairs, cfg.minhash.num_perm)
        if cfg.lsh.verify == "estimate":
            keep = estimate >= cfg.lsh.verify_threshold
        else:  # exact: decisive estimates decide now, the rest waits for the exact check
            keep = estimate >= cfg.lsh.estimate_accept
            unsure = pairs[~keep & (estimate >= cfg.lsh.estimate_reject)]
        edges = pairs[keep]
    save_npz(layout.lsh(p), edges=edges.astype(np.int64), unsure=unsure.astype(np.int64),
             candidates=np.int64(len(pairs)))
    if cfg.lsh.verify == "exact":
        ids = unsure.astype(np.int64).ravel()
        save_routed(layout.unsure(p), ids, file_of(offsets, ids), len(offsets) - 1)
    return {"candidates": int(len(pairs)), "edges": int(len(edges)), "unsure": int(len(unsure))}


def signature_estimates(store: SignatureStore, pairs: np.ndarray, num_perm: int) -> np.ndarray:
    """The MinHash Jaccard estimate of every pair, in batches."""
    estimate = np.zeros(len(pairs))
    for start in range(0, len(pairs), PAIRS_PER_BATCH):
        chunk = pairs[start : start + PAIRS_PER_BATCH]
        estimate[start : start + PAIRS_PER_BATCH] = estimate_jaccard(store.get(chunk[:, 0], num_perm),
                                                                     store.get(chunk[:, 1], num_perm))
    return estimate


def near_edges(cfg: DedupStageConfig, layout: Layout, p: int) -> np.ndarray:
    """The near-duplicate edges of partition p after verification."""
    if cfg.lsh.verify == "exact":
        return load_npy(layout.verified(p))
    return load_npz(layout.lsh(p), "edges")
