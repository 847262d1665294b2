"""The pure parts of decontamination: word n-grams, their places, the janitor's cut."""

from __future__ import annotations

import numpy as np

from pipeline.decontaminate.ngrams import ngram_hashes, redact, word_spans
from pipeline.decontaminate.scan import lookup
from pipeline.normalize import clean_text
from pipeline.shingles import shingle_strings
from tests.helpers.hf_support import real_texts


def test_ngrams_are_the_janitors_normalized_word_windows():
    texts = [*real_texts()[:5], "Short text.", "", "It's a Test -- of (thirteen) words, or more: one two three four five six!"]
    hashes, doc, pos = ngram_hashes(texts, 13)
    for k, text in enumerate(texts):
        grams = shingle_strings(clean_text(text), 13, "word") if len(clean_text(text).split()) >= 13 else []
        mine = hashes[doc == k]
        assert len(mine) == len(grams) and list(pos[doc == k]) == list(range(len(grams)))
        # equal n-grams, equal hashes; different ones, different hashes
        assert len(set(mine.tolist())) == len(set(grams))
        spans = word_spans(text)  # the places of the same words in the original text
        assert [clean_text(text[a:b]) for a, b in spans] == clean_text(text).split()
    assert ngram_hashes(["IT'S A TEST of thirteen words or more one two three four five six"], 13)[0][0] == hashes[doc == 7][0]


def test_lookup_finds_exactly_the_shared_hashes():
    grams = np.array([3, 8, 20, 41], dtype=np.uint64)
    hit, number = lookup(grams, np.array([8, 9, 41, 0, 3, 50], dtype=np.uint64))
    assert hit.tolist() == [0, 2, 4] and number.tolist() == [1, 3, 0]
    assert lookup(grams[:0], np.array([1], dtype=np.uint64))[0].size == 0


def test_redact_cuts_each_match_with_its_window():
    left, right = "a" * 300, "b" * 300
    text = f"{left} one two three {right} tail"  # "one" at 301, "three" ends at 314
    assert redact(text, np.array([1]), 3, 10) == [left[:291], right[9:] + " tail"]  # 10 characters each side
    assert redact(text, np.array([1, 2]), 2, 10) == [left[:291], right[9:] + " tail"]  # overlapping cuts merge
    assert redact(text, np.array([0]), 2, 0) == [" two three " + right + " tail"]  # from the start: one piece
    assert redact(text, np.array([], dtype=np.int64), 3, 10) == [text]
