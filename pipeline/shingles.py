"""Shingles of cleaned text: character or word n-grams, as strings or as 64-bit hashes.

Two representations of the same shingle sets:

* ``shingle_strings`` gives the n-grams themselves (what ``datasketch`` is fed);
* ``shingle_hashes`` gives one 64-bit hash per n-gram position for a whole batch of
  documents at once, computed with numpy over the batch's code points (or word
  hashes) instead of building Python strings. Equal n-grams get equal hashes.

A document with fewer than ``n`` units (characters or words) but some text has one
shingle, the whole text, so that short documents still dedup; an empty one has none.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

UNITS = ("char", "word")

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
# Odd 64-bit multiplier of the polynomial (Rabin-Karp style) window hash.
_POLY = np.uint64(0x9E3779B97F4A7C15)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: an avalanching bijection (wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def shingle_strings(text: str, n: int, unit: str = "char") -> list[str]:
    """The n-grams of ``text`` as strings (duplicates kept, in order)."""
    if unit == "char":
        if len(text) < n:
            return [text] if text else []
        return [text[i : i + n] for i in range(len(text) - n + 1)]
    if unit == "word":
        words = text.split()
        if len(words) < n:
            return [" ".join(words)] if words else []
        return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    raise ValueError(f"unknown shingle unit {unit!r} (expected one of {UNITS})")


def _window_hash(units: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash of every length-``n`` window of ``units`` (uint64, wrapping).

    Built by doubling (windows of 1, 2, 4, 8, ... units combined along the binary
    expansion of n) so it costs O(log n) passes over the array instead of n.
    """
    m = len(units) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        result = None
        result_len = 0
        block = units  # hashes of the windows of `size` units
        size = 1
        remaining = n
        while True:
            if remaining & 1:
                if result is None:
                    result = block.copy()
                else:  # a window of `result_len` units followed by one of `size` units
                    result = result[: len(block) - result_len] * (_POLY ** np.uint64(size))
                    result += block[result_len:]
                result_len += size
            remaining >>= 1
            if not remaining:
                break
            doubled = block[:-size] * (_POLY ** np.uint64(size))
            doubled += block[size:]
            block = doubled
            size *= 2
    return result[:m]


def _mix(h: np.ndarray, seed: int) -> np.ndarray:
    """Cheap in-place avalanche of polynomial hashes (xor-shift-multiply), seeded."""
    with np.errstate(over="ignore"):
        h ^= np.uint64(int(fmix64(np.array([seed], dtype=np.uint64))[0]))
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return h


def _batch_units(texts: Sequence[str], unit: str) -> tuple[np.ndarray, np.ndarray]:
    """All units of a batch concatenated (uint64) and each document's unit count."""
    if unit == "char":
        joined = "".join(texts)
        units = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        return units, lengths
    if unit == "word":
        return _word_units(texts)
    raise ValueError(f"unknown shingle unit {unit!r} (expected one of {UNITS})")


# Every code point that str.split() treats as whitespace.
_WHITESPACE = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)
_IS_SPACE = np.zeros(0x3002, dtype=bool)  # lookup table; code points above 0x3000 clip to False
_IS_SPACE[_WHITESPACE] = True
_INV_POLY = np.uint64(pow(int(_POLY), -1, 1 << 64))  # _POLY is odd, so invertible mod 2^64
_POWERS_CACHED = 1 << 22  # table entries kept between batches (64 MiB for both tables)
_powers_cache: list[np.ndarray] = [np.ones(1, np.uint64), np.ones(1, np.uint64)]


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """_POLY**i and _POLY**-i (mod 2^64) for i < n; tables up to _POWERS_CACHED entries are kept."""
    if len(_powers_cache[0]) < n:
        size = max(n, min(2 * n, _POWERS_CACHED))
        with np.errstate(over="ignore"):
            tables = [np.cumprod(np.concatenate(([np.uint64(1)], np.full(size - 1, base, np.uint64))), dtype=np.uint64)
                      for base in (_POLY, _INV_POLY)]
        if size > _POWERS_CACHED:
            return tables[0], tables[1]
        _powers_cache[:] = tables
    return _powers_cache[0][:n], _powers_cache[1][:n]


def _word_units(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One 64-bit hash per word (``str.split()`` words) of every document, vectorised.

    A word's hash is the polynomial hash of its code points, sum cp[j] * P^(j - start),
    read off one prefix sum over the whole batch: (prefix[end] - prefix[start]) * P^-start.
    That is a handful of passes over the code points, with no per-word Python work.
    """
    joined = " ".join(texts)  # the separator keeps words from spanning documents
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    space = np.take(_IS_SPACE, cps, mode="clip")  # code points above the table read its last entry: False
    # With space around the text, the changes space <-> non-space alternate: word start, word end, ...
    changes = np.flatnonzero(np.diff(space.view(np.int8), prepend=np.int8(1), append=np.int8(1)))
    word_starts, word_ends = changes[0::2], changes[1::2]
    powers, inverse_powers = _powers(len(cps))
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(cps) + 1, dtype=np.uint64)
        np.cumsum(cps * powers, out=prefix[1:])
        units = fmix64((prefix[word_ends] - prefix[word_starts]) * inverse_powers[word_starts])
    doc_starts = np.zeros(len(texts), dtype=np.int64)
    if len(texts) > 1:
        np.cumsum(np.fromiter((len(t) + 1 for t in texts[:-1]), dtype=np.int64, count=len(texts) - 1), out=doc_starts[1:])
    doc_of_word = np.searchsorted(doc_starts, word_starts, side="right") - 1
    lengths = np.bincount(doc_of_word, minlength=len(texts)).astype(np.int64)
    return units, lengths


def shingle_hashes(texts: Sequence[str], n: int, unit: str = "char", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every n-gram of every document in the batch.

    Returns ``(hashes, doc_index)``: parallel arrays, ``doc_index[i]`` being the
    position in ``texts`` of the document that shingle ``i`` belongs to (ascending).
    """
    units, lengths = _batch_units(texts, unit)
    hashes = _mix(_window_hash(units, n), seed)
    valid, doc_index, short_hashes, short_docs = _layout(units, lengths, n, seed)
    hashes = np.concatenate((hashes[valid], short_hashes))
    doc_index = np.concatenate((doc_index[valid], short_docs))
    order = np.argsort(doc_index, kind="stable")
    return hashes[order], doc_index[order]


def _layout(units: np.ndarray, lengths: np.ndarray, n: int, seed: int):
    """Which batch windows lie inside one document, and the one-shingle short documents.

    Returns (valid mask over windows, document of each window, hashes of short
    documents, their document indexes).
    """
    n_docs = len(lengths)
    m = max(len(units) - n + 1, 0)
    doc_index = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)[:m]
    ends = np.cumsum(lengths)
    valid = np.ones(m, dtype=bool)
    # The last n-1 windows of each document run into the next one.
    tail = np.minimum(lengths, n - 1)
    cut = np.repeat(ends - tail, tail) + (np.arange(int(tail.sum())) - np.repeat(np.cumsum(tail) - tail, tail))
    valid[cut[cut < m]] = False
    short_docs = np.nonzero((lengths > 0) & (lengths < n))[0]
    short_hashes = np.empty(len(short_docs), dtype=np.uint64)
    starts = ends - lengths
    with np.errstate(over="ignore"):
        for k, d in enumerate(short_docs):
            seg = units[starts[d] : ends[d]]
            # tagged with the length so it differs from every full window
            short_hashes[k] = _window_hash(seg, len(seg))[0] + np.uint64(len(seg) * 0x2545F4914F6CDD1D % (1 << 64))
    return valid, doc_index, _mix(short_hashes, seed), short_docs


def shingle_keys(texts: Sequence[str], n: int, unit: str, seed: int, doc_bits: int) -> np.ndarray:
    """Unsorted sort keys ``document << (64 - doc_bits) | hash >> doc_bits`` of a batch.

    Windows that cross a document border get the largest key (they sort last and
    belong to no document). ``len(texts)`` must be below ``2**doc_bits - 1``.
    """
    units, lengths = _batch_units(texts, unit)
    keys = _mix(_window_hash(units, n), seed)
    valid, doc_index, short_hashes, short_docs = _layout(units, lengths, n, seed)
    shift = np.uint64(64 - doc_bits)
    keys >>= np.uint64(doc_bits)
    keys |= doc_index.astype(np.uint64) << shift
    keys[~valid] = np.uint64(0xFFFFFFFFFFFFFFFF)
    if len(short_docs):
        short = (short_hashes >> np.uint64(doc_bits)) | (short_docs.astype(np.uint64) << shift)
        keys = np.concatenate((keys, short))
    return keys


def shingle_sets(texts: Sequence[str], n: int, unit: str = "char") -> list[np.ndarray]:
    """The shingle set of each document: its sorted unique 64-bit shingle hashes."""
    hashes, doc = shingle_hashes(texts, n, unit)
    edges = np.searchsorted(doc, np.arange(len(texts) + 1))
    return [np.unique(hashes[edges[k] : edges[k + 1]]) for k in range(len(texts))]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two shingle sets from ``shingle_sets`` (1.0 for two empty sets).

    Equals ``exact_jaccard`` of the texts unless two distinct shingles share a 64-bit
    hash (probability about 2^-64 per pair of shingles).
    """
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 1.0


def exact_jaccard(a: str, b: str, n: int, unit: str = "char") -> float:
    """Jaccard similarity of the two shingle sets, compared as strings (the reference;
    1.0 for two empty sets)."""
    sa, sb = set(shingle_strings(a, n, unit)), set(shingle_strings(b, n, unit))
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)
