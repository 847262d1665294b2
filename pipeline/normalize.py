"""Document normalization: ftfy's fix_text with NFC, plus SlimPajama's ``clean``.

``normalize_text`` returns exactly ``ftfy.fix_text(text, normalization="NFC")``.
ftfy runs at about 2 MB/s per core, yet almost all real text is already fine, so we
first prove, with cheap whole-document checks, that ftfy would leave the text
unchanged (or change it only by simple character substitutions whose result we can
compute and re-check), and call ftfy only where that proof fails.

Why the proof holds (ftfy 6.x, default config):

* ``fix_text`` cuts the text into segments that end after each "\\n" (and every
  ``max_decode_length`` characters inside longer lines) and runs ``fix_and_explain``
  on each; that repeats one pass of fixers until the segment stops changing. If one
  pass leaves a segment unchanged, ftfy returns it unchanged.
* One pass is: unescape_html (only while no "<" has been seen in this or an earlier
  segment), fix_encoding, fix_c1_controls, fix_latin_ligatures, fix_character_width,
  uncurl_quotes, fix_line_breaks, fix_surrogates, remove_terminal_escapes,
  remove_control_chars, NFC.
* unescape_html is the identity when its entity regex does not match;
  fix_encoding is the identity on ASCII text or text its ``is_bad`` regex does not
  match (that regex's only anchor is "^", so searching the whole document in
  MULTILINE mode finds every match any segment has, and more);
  the character fixers are the identity when none of the characters they map occur;
  NFC is the identity on NFC text.
* Every fixer and NFC works character by character or on short windows that never
  cross a "\\n", so applying them to a run of whole segments equals applying them to
  each segment and concatenating.

When the first pass changes a document only through the character fixers, we apply
ftfy's own fixer functions, then check that a second pass would be the identity on
the result; otherwise the document (segment by segment) goes to ftfy itself.

The ``is_bad`` regex is searched only in short windows around the rare characters
every one of its matches must contain (derived from the regex itself at import).
The argument was checked against ftfy 6.x; with another major version every
document simply goes through ftfy.
"""

from __future__ import annotations

import re
import string
import unicodedata

try:  # the regex parser moved in Python 3.11
    import re._constants as _sre
    import re._parser as _sre_parser
except ImportError:  # pragma: no cover
    import sre_constants as _sre
    import sre_parse as _sre_parser

import ftfy
from ftfy import fixes
from ftfy.badness import BADNESS_RE
from ftfy.chardata import (
    C1_CONTROL_RE,
    CONTROL_CHARS,
    DOUBLE_QUOTE_RE,
    HTML_ENTITY_RE,
    LIGATURES,
    SINGLE_QUOTE_RE,
    WIDTH_MAP,
)


def _char_class(codepoints) -> str:
    return "".join(re.escape(chr(c)) for c in sorted(codepoints))


# The proof above reads ftfy 6's fix_text; other versions get no shortcut.
_FAST_PATH_VALID = ftfy.__version__.split(".")[0] == "6"
_CONFIG = ftfy.TextFixerConfig(normalization="NFC", explain=False)
_MAX_SEGMENT = _CONFIG.max_decode_length

# "^" of ftfy's mojibake regex means "start of a segment"; MULTILINE makes it match
# after every "\n" of a whole document as well.
_BAD_ANYWHERE = re.compile(BADNESS_RE.pattern, BADNESS_RE.flags | re.MULTILINE)


def _badness_triggers() -> tuple[str, int] | None:
    """Characters every mojibake match must contain, and the longest match.

    ftfy's regex is slow (about 1 MB/s even on ASCII text), but each of its
    alternatives is a short fixed sequence with at least one element that only
    admits rare non-ASCII characters. So a match can only lie near one of those
    characters, and we search small windows around them instead of the whole text.
    Returns None when the regex is not of that shape (another ftfy version).
    """
    tree = _sre_parser.parse(BADNESS_RE.pattern, BADNESS_RE.flags)
    if len(tree.data) != 1 or tree.data[0][0] is not _sre.BRANCH:
        return None
    triggers: set[int] = set()
    longest = 0
    for branch in tree.data[0][1][1]:
        length, best = 0, None
        for op, arg in branch.data:
            if op is _sre.AT:
                continue
            if op is _sre.MAX_REPEAT and arg[0] == 0 and len(arg[2].data) == 1 and arg[1] < 100:
                length += arg[1]  # an optional element like \s?; never required
                continue
            chars = _element_chars(op, arg)
            if chars is _UNKNOWN:
                return None
            length += 1
            if chars is not None and min(chars) >= 128 and (best is None or len(chars) < len(best)):
                best = chars
        if best is None:
            return None
        triggers |= best
        longest = max(longest, length)
    return _char_class(triggers), longest


_UNKNOWN = object()


def _element_chars(op, arg):
    """The set of code points one single-character element admits; None when it
    admits ASCII or unknown sets (so it cannot serve as a trigger)."""
    if op is _sre.LITERAL:
        return {arg}
    if op is _sre.ANY:
        return None
    if op is _sre.IN:
        chars: set[int] = set()
        for item_op, item_arg in arg:
            if item_op is _sre.LITERAL:
                chars.add(item_arg)
            elif item_op is _sre.RANGE:
                chars.update(range(item_arg[0], item_arg[1] + 1))
            else:  # categories (\s, \w) and negated sets admit ASCII
                return None
        return chars
    return _UNKNOWN


_TRIGGERS = _badness_triggers()
if _TRIGGERS is not None:
    _TRIGGER_RUN = re.compile("[" + _TRIGGERS[0] + "]+")
    _REACH = _TRIGGERS[1] - 1


def _looks_bad(text: str) -> bool:
    """ftfy's ``is_bad`` would be true for some segment of ``text``."""
    if _TRIGGERS is None:
        return _BAD_ANYWHERE.search(text) is not None
    for run in _TRIGGER_RUN.finditer(text):
        # pos/endpos keep "^" tied to real line starts, and the regex has no "$" or
        # look-around, so a window search finds exactly the matches inside it.
        if _BAD_ANYWHERE.search(text, max(run.start() - _REACH, 0), run.end() + _REACH):
            return True
    return False


# Every character that one of ftfy's character-level fixers would replace or drop.
# Line breaks other than "\n", ESC (terminal escapes), surrogates, C1 controls,
# ligatures, full/half-width forms, curly quotes and removable control characters.
_FIXABLE_CHARS = re.compile(
    "["
    + _char_class(set(CONTROL_CHARS) | set(LIGATURES) | set(WIDTH_MAP))
    + "\r\x1b\u2028\u2029"
    + "\ud800-\udfff"
    + C1_CONTROL_RE.pattern[1:-1]
    + SINGLE_QUOTE_RE.pattern[1:-1]
    + DOUBLE_QUOTE_RE.pattern[1:-1]
    + "]"
)
# The ASCII subset, for the common all-ASCII document.
_FIXABLE_ASCII = re.compile("[" + _char_class(c for c in CONTROL_CHARS if c < 128) + "\r\x1b]")

# ftfy's character fixers in ftfy's order, each with a pattern that finds every
# character it could change (str.translate with a dict is slow; skip it when idle).
_CHAR_FIXERS = (
    (C1_CONTROL_RE, fixes.fix_c1_controls),
    (re.compile("[" + _char_class(LIGATURES) + "]"), fixes.fix_latin_ligatures),
    (re.compile("[" + _char_class(WIDTH_MAP) + "]"), fixes.fix_character_width),
    (re.compile(SINGLE_QUOTE_RE.pattern[:-1] + DOUBLE_QUOTE_RE.pattern[1:]), fixes.uncurl_quotes),
    (re.compile("[\r\u2028\u2029\x85]"), fixes.fix_line_breaks),
    (re.compile("[\ud800-\udfff]"), fixes.fix_surrogates),
    (re.compile("\x1b"), fixes.remove_terminal_escapes),
    (re.compile("[" + _char_class(CONTROL_CHARS) + "]"), fixes.remove_control_chars),
)


def _has_entity(text: str) -> bool:
    return "&" in text and HTML_ENTITY_RE.search(text) is not None


def _encoding_untouched(text: str) -> bool:
    """fix_encoding leaves every segment of ``text`` unchanged."""
    return text.isascii() or not _looks_bad(text)


def _is_fixed_point(text: str, unescape: bool) -> bool:
    """One ftfy pass leaves every segment of ``text`` unchanged."""
    if text.isascii():
        return _FIXABLE_ASCII.search(text) is None and not (unescape and _has_entity(text))
    return (
        _FIXABLE_CHARS.search(text) is None
        and not (unescape and _has_entity(text))
        and not _looks_bad(text)
        and unicodedata.is_normalized("NFC", text)
    )


def _fast_fix(text: str, unescape: bool) -> str | None:
    """ftfy's result for ``text`` (whole segments, no "<" rule change inside), or
    None when it cannot be proven without running ftfy."""
    if _is_fixed_point(text, unescape):
        return text
    # First pass: the HTML and encoding steps must be the identity ...
    if (unescape and _has_entity(text)) or not _encoding_untouched(text):
        return None
    # ... then the character fixers and NFC give the first pass's result exactly.
    fixed = text
    for touches, fixer in _CHAR_FIXERS:
        if touches.search(fixed):
            fixed = fixer(fixed)
    fixed = unicodedata.normalize("NFC", fixed)
    # A second pass must change nothing (its NFC step is the identity already). The
    # fixers may have turned "\r" into "\n"; the MULTILINE check covers those too.
    if _FIXABLE_CHARS.search(fixed) is None and not (unescape and _has_entity(fixed)) and _encoding_untouched(fixed):
        return fixed
    return None


def _segments(text: str):
    """ftfy's segmentation: after each "\\n", and every max_decode_length chars."""
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos) + 1 or len(text)
        end = min(end, pos + _MAX_SEGMENT)
        yield text[pos:end]
        pos = end


def _fix_by_segment(text: str) -> str:
    """fix_text's own loop, with the fast path tried on each segment."""
    config = _CONFIG
    out = []
    for segment in _segments(text):
        if config.unescape_html == "auto" and "<" in segment:
            config = config._replace(unescape_html=False)
        fixed = _fast_fix(segment, unescape=bool(config.unescape_html))
        if fixed is None:
            fixed = ftfy.fix_and_explain(segment, config).text
        out.append(fixed)
    return "".join(out)


def _longest_line(text: str) -> int:
    longest, pos = 0, 0
    while pos < len(text):
        end = text.find("\n", pos) + 1 or len(text)
        longest = max(longest, end - pos)
        pos = end
    return longest


def normalize_text(text: str) -> str:
    """Exactly ``ftfy.fix_text(text, normalization="NFC")``, fast on clean text."""
    if not _FAST_PATH_VALID:
        return ftfy.fix_text(text, normalization="NFC")
    if len(text) > _MAX_SEGMENT and _longest_line(text) > _MAX_SEGMENT:
        return _fix_by_segment(text)
    # HTML entities are decoded only in the segments before the first one with "<".
    lt = text.find("<")
    if lt < 0:
        fixed = _fast_fix(text, unescape=True)
    else:
        cut = text.rfind("\n", 0, lt) + 1
        head = _fast_fix(text[:cut], unescape=True) if cut else ""
        tail = _fast_fix(text[cut:], unescape=False) if head is not None else None
        fixed = None if tail is None else head + tail
    return fixed if fixed is not None else _fix_by_segment(text)


# SlimPajama's clean(): lowercase, drop ASCII punctuation, collapse whitespace.
_PUNCTUATION_BYTES = string.punctuation.encode("ascii")


def clean_text(text: str) -> str:
    """SlimPajama's ``clean``: the text the short rule measures and MinHash shingles.

    Punctuation is dropped from the UTF-8 bytes (ASCII bytes never occur inside a
    multi-byte character), which is several times faster than ``str.translate``.
    """
    lowered = text.lower().encode("utf-8", "surrogatepass")
    return " ".join(lowered.translate(None, _PUNCTUATION_BYTES).decode("utf-8", "surrogatepass").split())
