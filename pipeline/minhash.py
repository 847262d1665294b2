"""MinHash signatures for batches of cleaned documents.

Two schemes produce ``uint32`` signatures of shape ``[documents, num_perm]``:

* ``fast`` (default): one-permutation hashing. Every shingle gets one 64-bit hash;
  its top bits pick one of ``num_perm`` bins and the minimum per bin is the
  signature value. Empty bins borrow the value of another bin along a fixed,
  seeded probe sequence (Shrivastava's optimal densification), so two documents
  agree on a position with probability equal to their Jaccard similarity. The
  whole batch is one ``np.sort``: keys carry the document in their top 16 bits.
* ``datasketch`` / ``datasketch-legacy``: exactly the hash values of
  ``datasketch.MinHash(num_perm, seed)`` (default ``affine32`` scheme, or the
  pre-2.0 ``legacy`` scheme SlimPajama used) for the same shingles: SHA-1 32-bit
  hashes and datasketch's permutations. Slow; for compatibility checks.

A document without shingles (empty text) gets an all-``0xFFFFFFFF`` signature and
``valid`` False; callers keep such documents out of LSH.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.shingles import UNITS, fmix64, shingle_keys, shingle_strings

SCHEMES = ("fast", "datasketch", "datasketch-legacy")
EMPTY = np.uint32(0xFFFFFFFF)
_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64((1 << 32) - 1)
_DOC_BITS = 16  # documents per sort batch: 2^16
_KEY_BITS = 64 - _DOC_BITS
_MAX_DOCS = (1 << _DOC_BITS) - 2
_CHARS_PER_SORT = {"char": 1 << 16, "word": 1 << 18}


@dataclass(frozen=True)
class MinHasher:
    num_perm: int = 128
    ngram: int = 13
    unit: str = "char"
    seed: int = 1
    scheme: str = "fast"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown MinHash scheme {self.scheme!r} (expected one of {SCHEMES})")
        if self.unit not in UNITS:
            raise ValueError(f"unknown shingle unit {self.unit!r} (expected one of {UNITS})")
        if not 1 <= self.num_perm <= 4096:
            raise ValueError(f"num_perm must be in 1..4096, got {self.num_perm}")
        if self.ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {self.ngram}")

    def signatures(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(signatures uint32 [len(texts), num_perm], valid bool [len(texts)])``."""
        if self.scheme == "fast":
            return _oph_signatures(texts, self)
        return _datasketch_signatures(texts, self)


# --- fast: one-permutation hashing with optimal densification -------------------------


def _oph_signatures(texts: Sequence[str], mh: MinHasher) -> tuple[np.ndarray, np.ndarray]:
    k = mh.num_perm
    sigs = np.empty((len(texts), k), dtype=np.uint32)
    filled = np.empty((len(texts), k), dtype=bool)
    span = 1 << _KEY_BITS
    bin_lo = np.array([-(-b * span // k) for b in range(k + 1)], dtype=np.uint64)  # ceil(b*span/k)
    # Sub-batches of about 64K shingles keep the working arrays in the CPU cache.
    budget = _CHARS_PER_SORT[mh.unit]
    start = 0
    while start < len(texts):
        stop, size = start, 0
        while stop < len(texts) and (stop == start or size + len(texts[stop]) <= budget) and stop - start < _MAX_DOCS:
            size += len(texts[stop])
            stop += 1
        _oph_block(texts[start:stop], mh, bin_lo, sigs[start:stop], filled[start:stop])
        start = stop
    valid = filled.any(axis=1)
    sigs[~valid] = EMPTY
    return _densify(sigs, filled, valid, mh.seed), valid


def _oph_block(texts: Sequence[str], mh: MinHasher, bin_lo: np.ndarray, sigs: np.ndarray, filled: np.ndarray) -> None:
    k = mh.num_perm
    keys = shingle_keys(texts, mh.ngram, mh.unit, mh.seed, _DOC_BITS)
    # Sorted keys group by document, then by bin (bins are ranges of the hash), then value.
    keys.sort()
    doc_base = np.arange(len(texts), dtype=np.uint64) << np.uint64(_KEY_BITS)
    lo = (doc_base[:, None] + bin_lo[None, :k]).ravel()
    hi = (doc_base[:, None] + bin_lo[None, 1:]).ravel()
    pos = np.searchsorted(keys, lo)
    found = keys[np.minimum(pos, len(keys) - 1)] if len(keys) else np.zeros(len(lo), dtype=np.uint64)
    hit = (pos < len(keys)) & (found < hi)
    # Offset of the minimum inside its bin (< 2^48 / k); its low 32 bits identify it.
    values = ((found - lo) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    sigs[:] = np.where(hit, values, EMPTY).reshape(len(texts), k)
    filled[:] = hit.reshape(len(texts), k)


_PROBE_CELLS = 1 << 14  # probe-table entries per window: small enough to stay in cache
_PROBE_WINDOW_MAX = 4096


def _densify(values: np.ndarray, filled: np.ndarray, valid: np.ndarray, seed: int) -> np.ndarray:
    """Fill empty bins from the first filled bin along each bin's seeded probe sequence.

    Attempts are tried in windows (a [cells, attempts] probe table at a time), so a
    document with one filled bin out of 128 costs a few numpy calls, not hundreds.
    """
    k = values.shape[1]
    rows, cols = np.nonzero(~filled & valid[:, None])
    out = values.copy()
    first_attempt = 1
    while len(rows):
        window = int(min(_PROBE_WINDOW_MAX, max(1, _PROBE_CELLS // len(rows))))
        attempts = np.arange(first_attempt, first_attempt + window, dtype=np.uint64)
        probes = _probe(cols[:, None], attempts[None, :], k, seed)  # [cells, window]
        hits = filled[rows[:, None], probes]
        found = hits.any(axis=1)
        first_hit = hits.argmax(axis=1)[found]
        r, c = rows[found], cols[found]
        out[r, c] = values[r, probes[found, first_hit]]
        rows, cols = rows[~found], cols[~found]
        first_attempt += window
    return out


def _probe(cols: np.ndarray, attempt, k: int, seed: int) -> np.ndarray:
    """The bin that empty bin ``cols`` looks at on ``attempt`` (broadcasts): same for every document."""
    with np.errstate(over="ignore"):
        step = np.asarray(attempt, dtype=np.uint64) * np.uint64(0xBF58476D1CE4E5B9) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        x = cols.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + step
        return (fmix64(x) % np.uint64(k)).astype(np.int64)


# --- datasketch compatibility ------------------------------------------------------------


def _sha1_hash32(data: bytes) -> int:
    return struct.unpack("<I", hashlib.sha1(data).digest()[:4])[0]


def datasketch_permutations(num_perm: int, seed: int, legacy: bool) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutation parameters (a, b), drawn the way it draws them."""
    gen = np.random.RandomState(seed)
    if legacy:
        ab = np.array(
            [(gen.randint(1, _MERSENNE, dtype=np.uint64), gen.randint(0, _MERSENNE, dtype=np.uint64)) for _ in range(num_perm)],
            dtype=np.uint64,
        ).T
        return ab[0], ab[1]
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _datasketch_signatures(texts: Sequence[str], mh: MinHasher) -> tuple[np.ndarray, np.ndarray]:
    legacy = mh.scheme == "datasketch-legacy"
    a, b = datasketch_permutations(mh.num_perm, mh.seed, legacy)
    sigs = np.full((len(texts), mh.num_perm), EMPTY, dtype=np.uint32)
    valid = np.zeros(len(texts), dtype=bool)
    chunk = 4096  # shingles per step, bounds the [shingles, num_perm] temporary
    with np.errstate(over="ignore"):
        for d, text in enumerate(texts):
            shingles = shingle_strings(text, mh.ngram, mh.unit)
            if not shingles:
                continue
            valid[d] = True
            hv_all = np.array([_sha1_hash32(s.encode("utf-8")) for s in shingles], dtype=np.uint64)
            best = np.full(mh.num_perm, _MAX32 if legacy else np.uint32(EMPTY), dtype=np.uint64 if legacy else np.uint32)
            for i in range(0, len(hv_all), chunk):
                hv = hv_all[i : i + chunk]
                if legacy:
                    phv = ((hv[:, None] * a + b) % _MERSENNE) & _MAX32
                else:
                    phv = _fmix32(hv.astype(np.uint32))[:, None] * a + b
                best = np.minimum(best, phv.min(axis=0))
            sigs[d] = best.astype(np.uint32)
    return sigs, valid


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of agreeing positions, row by row (the MinHash Jaccard estimate)."""
    return (sig_a == sig_b).mean(axis=-1)
