"""Locality-sensitive hashing over MinHash signatures: band layout, band keys,
candidate pairs from (band, key) groups, and verification of candidates.

A pair of documents at Jaccard ``s`` becomes a candidate with probability
``1 - (1 - s**rows)**bands``. SlimPajama used datasketch's "optimal" 9 x 13 for
threshold 0.8 (equal false-positive and false-negative weights), which catches a
pair at 0.8 only 40% of the time. Weighting false negatives more gives more bands
of fewer rows; the extra false candidates are removed by verification.
"""

from __future__ import annotations

import numpy as np

from pipeline.shingles import fmix64


def candidate_probability(s: np.ndarray | float, bands: int, rows: int) -> np.ndarray:
    return 1.0 - (1.0 - np.asarray(s, dtype=float) ** rows) ** bands


def optimal_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted area of false positives below the
    threshold and false negatives above it (datasketch's criterion)."""
    lo = np.linspace(0.0, threshold, 401)
    hi = np.linspace(threshold, 1.0, 401)
    best, best_err = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(candidate_probability(lo, bands, rows), lo)
            fn = np.trapezoid(1.0 - candidate_probability(hi, bands, rows), hi)
            err = fp * fp_weight + fn * fn_weight
            if err < best_err - 1e-15:
                best, best_err = (bands, rows), err
    return best


def band_keys(signatures: np.ndarray, bands: int, rows: int, seed: int = 0) -> np.ndarray:
    """One 64-bit key per (document, band): equal rows in a band give equal keys.

    Returns ``uint64 [documents, bands]``; the band index is mixed in, so keys of
    different bands never need telling apart by key alone.
    """
    n = signatures.shape[0]
    if bands * rows > signatures.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} hash values, signatures have {signatures.shape[1]}")
    sig = signatures[:, : bands * rows].astype(np.uint64).reshape(n, bands, rows)
    with np.errstate(over="ignore"):
        key = np.broadcast_to(np.arange(bands, dtype=np.uint64) + np.uint64(seed), (n, bands)).copy()
        for r in range(rows):
            key = fmix64(key * np.uint64(0x9E3779B97F4A7C15) + sig[:, :, r])
    return key


def bucket_pairs(keys: np.ndarray, docs: np.ndarray, max_bucket_pairs: int = 64) -> np.ndarray:
    """Candidate pairs ``int64 [m, 2]`` (lower id first, unique, sorted) from band keys.

    ``keys`` and ``docs`` are parallel: one row per (document, band). Documents with
    equal keys share a bucket. Small buckets give every pair; a bucket that would give
    more than ``max_bucket_pairs`` pairs gives a star around its smallest id plus a
    chain through its sorted members, which keeps it connected at linear cost.
    """
    if len(keys) == 0:
        return np.empty((0, 2), dtype=np.int64)
    order = np.lexsort((docs, keys))
    keys, docs = keys[order], docs[order]
    new = np.ones(len(keys), dtype=bool)
    new[1:] = keys[1:] != keys[:-1]
    starts = np.nonzero(new)[0]
    sizes = np.diff(np.append(starts, len(keys)))
    pairs = []
    # Buckets of size 2 dominate: handle them with arrays.
    two = starts[sizes == 2]
    pairs.append(np.stack((docs[two], docs[two + 1]), axis=1))
    for start, size in zip(starts[sizes > 2], sizes[sizes > 2]):
        members = np.unique(docs[start : start + size])
        m = len(members)
        if m < 2:
            continue
        if m * (m - 1) // 2 <= max_bucket_pairs:
            i, j = np.triu_indices(m, k=1)
        else:
            i = np.concatenate((np.zeros(m - 1, dtype=np.int64), np.arange(1, m - 1)))
            j = np.concatenate((np.arange(1, m), np.arange(2, m)))
        pairs.append(np.stack((members[i], members[j]), axis=1))
    out = np.concatenate(pairs).astype(np.int64)
    out = out[out[:, 0] != out[:, 1]]
    out.sort(axis=1)
    return unique_pairs(out)


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Distinct rows of an ``int64 [m, 2]`` array, sorted."""
    if len(pairs) == 0:
        return pairs.reshape(0, 2).astype(np.int64)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    pairs = pairs[order]
    keep = np.ones(len(pairs), dtype=bool)
    keep[1:] = (pairs[1:] != pairs[:-1]).any(axis=1)
    return pairs[keep]
