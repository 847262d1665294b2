"""Train / holdout split by document hash, exact decontamination, repetition weights.

The split of a document depends only on its id and the seed, never on the order in
which workers see it, so it is the same whatever the number of workers or blocks.
Hashing the id (not the text) lets two identical texts land in different splits;
decontamination then removes from train every document whose raw-text SHA-256 equals
a holdout document's, as SlimPajama did.
"""

from __future__ import annotations

import hashlib
import math
from typing import Mapping

SPLITS = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = 0, 1, 2
_UNIT = float(1 << 64)


def unit_hash(seed: int, salt: str, key: str) -> float:
    """A uniform number in [0, 1) from (seed, salt, key): deterministic, order-free."""
    digest = hashlib.sha256(f"{seed}\x00{salt}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _UNIT


def assign_split(doc_id: str, seed: int, validation_fraction: float, test_fraction: float) -> int:
    u = unit_hash(seed, "split", doc_id)
    if u < validation_fraction:
        return VALIDATION
    if u < validation_fraction + test_fraction:
        return TEST
    return TRAIN


def text_sha256(text: str) -> bytes:
    """SHA-256 of the raw text (UTF-8): the decontamination key."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def is_contaminated(split: int, digest: bytes, holdout_digests: set[bytes] | frozenset[bytes]) -> bool:
    return split == TRAIN and digest in holdout_digests


def repeats(doc_id: str, source: str, seed: int, weights: Mapping[str, float]) -> int:
    """How many times a train document enters the token stream.

    A weight w gives floor(w) copies plus one more for a seeded fraction frac(w) of the
    source's documents, so a source's expected token count scales by exactly w.
    """
    weight = weights.get(source, 1.0)
    whole = math.floor(weight)
    extra = 1 if unit_hash(seed, "repeat", doc_id) < weight - whole else 0
    return whole + extra


def check_fractions(validation_fraction: float, test_fraction: float) -> None:
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"split.{name} must be in [0, 1), got {value}")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError("split.validation_fraction + split.test_fraction must be below 1")
