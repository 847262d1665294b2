"""Edits of real text for tests: words replaced at seeded random positions."""

from __future__ import annotations

import random


def replace_words(text: str, fraction: float, rng: random.Random) -> str:
    """``text`` with ``fraction`` of its whitespace-separated words (at least one)
    replaced by made-up ones; whitespace between words is kept."""
    words = text.split(" ")
    count = max(1, round(fraction * len(words)))
    for p in rng.sample(range(len(words)), min(count, len(words))):
        words[p] = f"zq{rng.randrange(10**6)}x"
    return " ".join(words)
