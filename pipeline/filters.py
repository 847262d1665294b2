"""Document filters: SlimPajama's short-document rule and Gopher / C4 quality rules.

Each rule is a pure function ``(text, settings, ...) -> None | reason``; ``None`` keeps
the document. Reasons are ``"short"`` or ``"<rule>:<check>"`` (for example
``"gopher_quality:mean_word_length"``), so a ledger can say exactly why a document
went. ``build_filter`` turns a ``FilterConfig`` into one callable
``(text, source) -> None | reason`` that applies the rules chosen for each source,
in the configured order, and returns the first reason.

Words are whitespace-separated tokens (``str.split()``); Gopher's word counts, mean
word length and stop words use the words of SlimPajama's ``clean_text`` (lowercase, no
ASCII punctuation). Every rule is linear in the text (plus small sorts) and cheap
enough to run on every document. The repetition rule compares n-grams through 64-bit
hashes of their words (equal n-grams always agree; a false match between different
n-grams has probability about 2^-64 per pair).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import filterfalse
from typing import Callable, Optional, Sequence

import numpy as np

from pipeline.normalize import clean_text

# --- settings (the values in configs/data/*.yaml; the defaults mirror them) --------


@dataclass
class ShortRule:
    min_chars: int = 200  # of clean_text(text): SlimPajama's threshold


@dataclass
class GopherQualityRule:
    min_words: int = 50  # words with a non-punctuation character
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_hash_word_ratio: float = 0.1  # "#" per word
    max_ellipsis_word_ratio: float = 0.1  # "..." or "\u2026" per word
    max_bullet_lines_frac: float = 0.9  # of non-blank lines
    max_ellipsis_lines_frac: float = 0.3  # of non-blank lines
    min_alpha_words_frac: float = 0.8  # words with at least one letter
    min_stop_words: int = 2
    stop_words: list[str] = field(default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"])
    bullets: list[str] = field(default_factory=lambda: ["\u2022", "-"])


@dataclass
class GopherRepetitionRule:
    max_dup_para_frac: float = 0.30  # duplicate paragraphs / paragraphs
    max_dup_para_char_frac: float = 0.20  # characters in duplicate paragraphs / characters
    max_dup_line_frac: float = 0.30
    max_dup_line_char_frac: float = 0.20
    # [n, max fraction of characters in the most frequent word n-gram]
    top_ngram_char_frac: list[tuple[int, float]] = field(default_factory=lambda: [(2, 0.20), (3, 0.18), (4, 0.16)])
    # [n, max fraction of characters in repeated occurrences of word n-grams]
    dup_ngram_char_frac: list[tuple[int, float]] = field(
        default_factory=lambda: [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]
    )


@dataclass
class C4Rule:
    lorem_ipsum: bool = True  # drop documents containing "lorem ipsum" (any case)
    curly_brace: bool = True  # drop documents containing "{"


@dataclass
class FilterConfig:
    default: list[str] = field(default_factory=lambda: ["short"])  # rules for unlisted sources
    per_source: dict[str, list[str]] = field(default_factory=dict)  # source name -> rules
    short: ShortRule = field(default_factory=ShortRule)
    gopher_quality: GopherQualityRule = field(default_factory=GopherQualityRule)
    gopher_repetition: GopherRepetitionRule = field(default_factory=GopherRepetitionRule)
    c4: C4Rule = field(default_factory=C4Rule)

    def __post_init__(self) -> None:
        for where, rules in [("default", self.default)] + [
            (f"per_source.{name}", rules) for name, rules in self.per_source.items()
        ]:
            unknown = [r for r in rules if r not in RULES]
            if unknown:
                raise ValueError(f"filters.{where}: unknown rule {unknown[0]!r} (known rules: {', '.join(RULES)})")

    def rules_for(self, source: str) -> list[str]:
        return self.per_source.get(source, self.default)


# --- SlimPajama ------------------------------------------------------------------------


def short_rule(text: str, cfg: ShortRule, cleaned: Optional[str] = None) -> Optional[str]:
    """SlimPajama: drop a document whose cleaned text has fewer than min_chars characters."""
    if cleaned is None:
        cleaned = clean_text(text)
    return "short" if len(cleaned) < cfg.min_chars else None


# --- Gopher quality (Rae et al. 2021, thresholds as in datatrove) ---------------------

_LETTER = re.compile(r"[^\W\d_]")  # word characters that are not digits or "_"
# Patterns anchored on a literal "\n" (searched in "\n" + text) run several times
# faster than "^" with re.MULTILINE.
_NON_BLANK_LINE = re.compile(r"\n[^\S\n]*\S")
_ELLIPSIS_LINE = re.compile(r"(?:\.\.\.|\u2026)[^\S\n]*(?=\n)")


@lru_cache(maxsize=16)
def _bullet_line(bullets: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\n[^\S\n]*(?:" + "|".join(map(re.escape, bullets)) + ")")


def _words_without_letter(words: Sequence[str]) -> int:
    others = list(filterfalse(str.isalpha, words))  # most words are all letters
    return len(others) - sum(map(bool, map(_LETTER.search, others)))


def gopher_quality_rule(
    text: str,
    cfg: GopherQualityRule,
    words: Optional[Sequence[str]] = None,
    cleaned: Optional[str] = None,
) -> Optional[str]:
    """Gopher's document quality heuristics; the reason names the failed check.

    Word counts, mean word length and stop words use the words of ``clean_text``
    (lowercase, without ASCII punctuation, so tokens of punctuation alone vanish);
    the symbol and letter ratios use the whitespace tokens of the text itself.
    Lines are split at "\n"; blank lines do not count.
    """
    content = (clean_text(text) if cleaned is None else cleaned).split()
    if len(content) < cfg.min_words:
        return "gopher_quality:min_words"
    if len(content) > cfg.max_words:
        return "gopher_quality:max_words"
    mean_length = sum(map(len, content)) / len(content)
    if not cfg.min_mean_word_length <= mean_length <= cfg.max_mean_word_length:
        return "gopher_quality:mean_word_length"
    words = text.split() if words is None else words
    n_words = len(words)
    if text.count("#") / n_words > cfg.max_hash_word_ratio:
        return "gopher_quality:hash_ratio"
    if (text.count("...") + text.count("\u2026")) / n_words > cfg.max_ellipsis_word_ratio:
        return "gopher_quality:ellipsis_ratio"
    framed = "\n" + text + "\n"
    n_lines = len(_NON_BLANK_LINE.findall(framed))
    if n_lines:
        if cfg.bullets and len(_bullet_line(tuple(cfg.bullets)).findall(framed)) / n_lines > cfg.max_bullet_lines_frac:
            return "gopher_quality:bullet_lines"
        if len(_ELLIPSIS_LINE.findall(framed)) / n_lines > cfg.max_ellipsis_lines_frac:
            return "gopher_quality:ellipsis_lines"
    if 1 - _words_without_letter(words) / n_words < cfg.min_alpha_words_frac:
        return "gopher_quality:alpha_words"
    if cfg.min_stop_words > 0:
        stop_words, found = frozenset(cfg.stop_words), 0
        for w in content:
            if w in stop_words:
                found += 1
                if found >= cfg.min_stop_words:
                    break
        else:
            return "gopher_quality:stop_words"
    return None


# --- Gopher repetition -----------------------------------------------------------------

_PARAGRAPH_BREAK = re.compile(r"\n\n+")  # as fast as a literal search, unlike \n{2,}
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant for the n-gram hash


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(repeated occurrences, characters in them); the first occurrence is not counted."""
    counts = Counter(items)
    repeated = len(items) - len(counts)
    chars = sum(len(item) * (n - 1) for item, n in counts.items() if n > 1) if repeated else 0
    return repeated, chars


def _ngram_hashes(word_hashes: np.ndarray, n: int, cache: Optional[dict] = None) -> np.ndarray:
    """64-bit hash of every word n-gram (polynomial in the word hashes, mod 2^64);
    ``cache`` keeps shorter n-grams so that longer ones extend them."""
    cache = {} if cache is None else cache
    m = max((k for k in cache if k <= n), default=1)
    out = cache.get(m, word_hashes)
    with np.errstate(over="ignore"):
        for k in range(m, n):
            out = out[:-1] * _MIX + word_hashes[k:]
    cache[n] = out
    return out


def _top_ngram_chars(hashes: np.ndarray, starts_chars: np.ndarray) -> int:
    """Characters covered by all occurrences of the most frequent n-gram (ties: the
    one seen first), as len(n-gram) * count."""
    _, first, counts = np.unique(hashes, return_index=True, return_counts=True)
    top = counts.max()
    i = first[counts == top].min()
    return int(starts_chars[i]) * int(top)


def _repeated_ngram_chars(hashes: np.ndarray, n: int, chars_no_space: np.ndarray) -> int:
    """datatrove's scan: walk the n-grams left to right; an n-gram seen before adds its
    characters and the walk jumps past it. Only n-grams that occur twice can ever be
    "seen before", so the walk visits just those positions."""
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    candidates = np.flatnonzero(counts[inverse] > 1)
    if candidates.size == 0:
        return 0
    seen: set[int] = set()
    total, next_free = 0, 0
    groups = inverse[candidates].tolist()
    for pos, group in zip(candidates.tolist(), groups):
        if pos < next_free:
            continue
        if group in seen:
            total += int(chars_no_space[pos])
            next_free = pos + n
        else:
            seen.add(group)
    return total


def gopher_repetition_rule(
    text: str, cfg: GopherRepetitionRule, words: Optional[Sequence[str]] = None
) -> Optional[str]:
    """Gopher's repetition heuristics over paragraphs, lines and word n-grams."""
    n_chars = len(text)
    if n_chars == 0:
        return None
    body = text.strip()
    if not body:
        return None
    paragraphs = _PARAGRAPH_BREAK.split(body)
    repeated, chars = _duplicates(paragraphs)
    if repeated / len(paragraphs) > cfg.max_dup_para_frac:
        return "gopher_repetition:dup_para_frac"
    if chars / n_chars > cfg.max_dup_para_char_frac:
        return "gopher_repetition:dup_para_char_frac"
    lines = [line for line in body.split("\n") if line]  # = re.split(r"\n+", body)
    repeated, chars = _duplicates(lines)
    if repeated / len(lines) > cfg.max_dup_line_frac:
        return "gopher_repetition:dup_line_frac"
    if chars / n_chars > cfg.max_dup_line_char_frac:
        return "gopher_repetition:dup_line_char_frac"

    words = text.split() if words is None else words
    n_words = len(words)
    if n_words < 2:
        return None
    word_hashes = np.fromiter(map(hash, words), dtype=np.int64, count=n_words).view(np.uint64)
    prefix = np.zeros(n_words + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=n_words), out=prefix[1:])
    cache: dict[int, np.ndarray] = {}
    # An n-gram occurs at most as often as its first or last word: a cheap upper bound
    # that spares the exact count on almost every real document.
    _, word_group, word_counts = np.unique(word_hashes, return_inverse=True, return_counts=True)
    at = word_counts[word_group]
    for n, limit in cfg.top_ngram_char_frac:
        if n_words < n:
            continue
        # characters of " ".join(n-gram) for the n-gram starting at each word
        span = prefix[n:] - prefix[:-n] + (n - 1)
        if (span * np.minimum(at[: len(span)], at[n - 1 :])).max() / n_chars <= limit:
            continue
        if _top_ngram_chars(_ngram_hashes(word_hashes, n, cache), span) / n_chars > limit:
            return f"gopher_repetition:top_{n}gram"
    # A repeated n-gram lies inside a run of >= n consecutive words that each occur
    # more than once; the characters of such runs bound the repeated characters.
    edges = np.diff(np.concatenate(([0], (at > 1).view(np.int8), [0])))
    run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    run_words, run_chars = run_ends - run_starts, prefix[run_ends] - prefix[run_starts]
    for n, limit in sorted(cfg.dup_ngram_char_frac):
        if n_words < n:
            continue
        if run_chars[run_words >= n].sum() / n_chars <= limit:
            continue
        hashes = _ngram_hashes(word_hashes, n, cache)
        ordered = np.sort(hashes)
        if not (ordered[1:] == ordered[:-1]).any():
            break  # no n-gram occurs twice, so no longer n-gram does either
        repeated_chars = _repeated_ngram_chars(hashes, n, prefix[n:] - prefix[:-n])
        if repeated_chars / n_chars > limit:
            return f"gopher_repetition:dup_{n}gram"
    return None


# --- C4 (Raffel et al. 2020), document-level rules -------------------------------------

_LOREM_IPSUM = re.compile("lorem ipsum", re.IGNORECASE)


def c4_rule(text: str, cfg: C4Rule) -> Optional[str]:
    """C4's page-level rules: placeholder text and curly braces (code, not prose)."""
    if cfg.lorem_ipsum and _LOREM_IPSUM.search(text):
        return "c4:lorem_ipsum"
    if cfg.curly_brace and "{" in text:
        return "c4:curly_brace"
    return None


# --- wiring ----------------------------------------------------------------------------

def reason_group(reason: Optional[str]) -> Optional[str]:
    """"short" for SlimPajama's rule, "quality" for the Gopher and C4 rules."""
    if reason is None:
        return None
    return "short" if reason == "short" else "quality"


class _Document:
    """One document as the rules see it: the cleaned text and the word split are
    computed once, when a rule first needs them."""

    def __init__(self, text: str, cleaned: Optional[str] = None):
        self.text = text
        self._cleaned = cleaned
        self._words: Optional[list[str]] = None

    @property
    def cleaned(self) -> str:
        if self._cleaned is None:
            self._cleaned = clean_text(self.text)
        return self._cleaned

    @property
    def words(self) -> list[str]:
        if self._words is None:
            self._words = self.text.split()
        return self._words


# Rule name (as written in filters.default / filters.per_source) -> the rule on a
# document with its settings. A new rule is one entry here; FilterConfig rejects a
# name that has none.
RULES: dict[str, Callable[[_Document, FilterConfig], Optional[str]]] = {
    "short": lambda doc, cfg: short_rule(doc.text, cfg.short, doc.cleaned),
    "gopher_quality": lambda doc, cfg: gopher_quality_rule(doc.text, cfg.gopher_quality, doc.words, doc.cleaned),
    "gopher_repetition": lambda doc, cfg: gopher_repetition_rule(doc.text, cfg.gopher_repetition, doc.words),
    "c4": lambda doc, cfg: c4_rule(doc.text, cfg.c4),
}


class _SourceFilter:
    """The rules of one source, in order; the first reason wins."""

    def __init__(self, cfg: FilterConfig, rules: list[str]):
        self.cfg = cfg
        self.rules = tuple(RULES[name] for name in rules)  # names were checked by FilterConfig

    def __call__(self, text: str, cleaned: Optional[str] = None) -> Optional[str]:
        doc = _Document(text, cleaned)
        for rule in self.rules:
            reason = rule(doc, self.cfg)
            if reason is not None:
                return reason
        return None


def build_filter(cfg: FilterConfig) -> Callable[..., Optional[str]]:
    """``f(text, source, cleaned=None) -> None | reason`` applying ``cfg``'s rules for
    ``source``; pass ``cleaned=clean_text(text)`` when it is already at hand."""
    default = _SourceFilter(cfg, cfg.default)
    by_source = {name: _SourceFilter(cfg, rules) for name, rules in cfg.per_source.items()}

    def document_filter(text: str, source: str, cleaned: Optional[str] = None) -> Optional[str]:
        return by_source.get(source, default)(text, cleaned)

    return document_filter
