"""MinHash signatures: datasketch compatibility, shingle hashing, estimate accuracy."""

from __future__ import annotations

import random

import datasketch
import numpy as np
import pytest

from pipeline.minhash import MinHasher, _densify, _probe, estimate_jaccard
from pipeline.normalize import clean_text
from pipeline.shingles import exact_jaccard, jaccard, shingle_hashes, shingle_sets, shingle_strings
from tests.pipeline.test_dedup import edit_to_jaccard, real_documents


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return [clean_text(t) for t in real_documents(12)]


@pytest.mark.parametrize("scheme,ds_scheme", [("datasketch", "affine32"), ("datasketch-legacy", "legacy")])
@pytest.mark.parametrize("unit,n", [("char", 13), ("word", 5)])
def test_datasketch_compat_exact_hashvalues(docs, scheme, ds_scheme, unit, n):
    texts = docs[:4] + ["short", "", "héllo wörld ☃ 𝄞 " * 4]
    sigs, valid = MinHasher(num_perm=128, ngram=n, unit=unit, seed=1, scheme=scheme).signatures(texts)
    for i, text in enumerate(texts):
        m = datasketch.MinHash(num_perm=128, seed=1, scheme=ds_scheme)
        m.update_batch([s.encode("utf-8") for s in shingle_strings(text, n, unit)])
        np.testing.assert_array_equal(m.hashvalues.astype(np.uint64), sigs[i].astype(np.uint64))
        assert valid[i] == bool(text)


@pytest.mark.parametrize("unit,n", [("char", 13), ("word", 3), ("char", 1), ("word", 40)])
def test_shingle_hashes_match_shingle_strings(docs, unit, n):
    texts = docs[:3] + ["abc", "", "a b", "héllo wörld ☃ 𝄞 again and again"]
    hashes, doc = shingle_hashes(texts, n, unit)
    for i, text in enumerate(texts):
        strings = shingle_strings(text, n, unit)
        mine = hashes[doc == i]
        assert len(mine) == len(strings)
        assert len(set(mine.tolist())) == len(set(strings))
    # and across documents: as many distinct hashes as distinct shingles
    all_strings = [s for t in texts for s in shingle_strings(t, n, unit)]
    assert len(set(hashes.tolist())) == len(set(all_strings))


@pytest.mark.parametrize("unit,n", [("char", 13), ("word", 5)])
def test_hashed_shingle_sets_give_the_exact_jaccard(docs, unit, n):
    """The verification step compares hashed shingle sets: the same Jaccard as the
    string sets, on edited real documents, short ones and empty ones."""
    rng = random.Random(3)
    pairs = [(d, clean_text(edit_to_jaccard(d, t, rng, n)[0])) for d in docs[:6] for t in (0.6, 0.8, 0.9)]
    pairs += [("abc", "abd"), ("", ""), ("", docs[0]), (docs[1], docs[1])]
    for a, b in pairs:
        sa, sb = shingle_sets([a, b], n, unit)
        assert sa.tolist() == sorted(set(sa.tolist()))
        assert jaccard(sa, sb) == pytest.approx(exact_jaccard(a, b, n, unit), abs=1e-12)


def test_fast_signatures_do_not_depend_on_the_batch(docs):
    mh = MinHasher()
    together, _ = mh.signatures(docs)
    alone = np.stack([mh.signatures([d])[0][0] for d in docs])
    np.testing.assert_array_equal(together, alone)
    reversed_batch, _ = mh.signatures(docs[::-1])
    np.testing.assert_array_equal(together, reversed_batch[::-1])


@pytest.mark.parametrize("unit", ["char", "word"])
def test_fast_estimate_tracks_exact_jaccard(docs, unit):
    """Edited real documents: the estimate is unbiased and as tight as 128 permutations allow."""
    rng = random.Random(1)
    mh = MinHasher(unit=unit, ngram=13 if unit == "char" else 5)
    errors = []
    for d in docs:
        for target in (0.5, 0.7, 0.85, 0.95):
            edited, _ = edit_to_jaccard(d, target, rng)
            edited = clean_text(edited)
            j = exact_jaccard(d, edited, mh.ngram, unit)
            sig, _ = mh.signatures([d, edited])
            errors.append(float(estimate_jaccard(sig[0], sig[1])) - j)
    errors = np.array(errors)
    assert abs(errors.mean()) < 0.015
    assert errors.std() < 0.06
    assert np.abs(errors).max() < 0.2


def test_identical_texts_identical_signatures_and_empty_text_invalid(docs):
    sig, valid = MinHasher().signatures([docs[0], docs[1], docs[0], ""])
    np.testing.assert_array_equal(sig[0], sig[2])
    assert (sig[0] != sig[1]).mean() > 0.9
    assert valid.tolist() == [True, True, True, False]


def test_short_text_is_one_shingle():
    assert shingle_strings("abc", 13) == ["abc"]
    assert shingle_strings("one two", 3, "word") == ["one two"]
    sig, valid = MinHasher().signatures(["abc", "abd", "abc"])
    assert valid.all()
    np.testing.assert_array_equal(sig[0], sig[2])
    assert (sig[0] != sig[1]).all()


def test_densify_takes_the_first_filled_bin_along_each_probe_sequence():
    rng = np.random.default_rng(3)
    k = 32
    values = rng.integers(0, 2**32, size=(40, k), dtype=np.uint64).astype(np.uint32)
    filled = rng.random((40, k)) < np.linspace(0.0, 0.9, 40)[:, None]  # from no bin to most bins
    filled[1, :] = False
    filled[1, 5] = True  # one filled bin: every other bin must probe its way to it
    valid = filled.any(axis=1)
    out = _densify(values, filled, valid, seed=11)
    for row in np.flatnonzero(valid):
        for col in range(k):
            if filled[row, col]:
                assert out[row, col] == values[row, col]
                continue
            attempt = 1
            while not filled[row, probe := int(_probe(np.array([col]), attempt, k, 11)[0])]:
                attempt += 1
            assert out[row, col] == values[row, probe], (row, col)
    assert (out[1] == values[1, 5]).all()
