"""Document filters: each rule keeps real prose and names the check that fails."""

from __future__ import annotations

import glob
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from common.config import ConfigError, load_config
from pipeline import filters
from pipeline.filters import (
    C4Rule,
    FilterConfig,
    GopherQualityRule,
    GopherRepetitionRule,
    ShortRule,
    build_filter,
    c4_rule,
    gopher_quality_rule,
    gopher_repetition_rule,
    reason_group,
    short_rule,
)

REPO = Path(__file__).resolve().parents[2]

PROSE = """\
The river had been rising for three days before anyone in the village thought to move
the grain out of the low barns. By the time the mayor called a meeting, the water was
already lapping at the steps of the church, and the older farmers were arguing about
whether the old levee would hold through another night of rain.

Marta listened from the back of the hall. She had grown up on the eastern bank, where
the fields flooded every spring, and she knew that the levee was only as strong as its
weakest section near the mill. When the mayor asked for volunteers to fill sandbags, she
raised her hand before she had time to think about it.

They worked through the evening with lanterns hung from the branches of the willows.
Some of the younger men carried the bags two at a time, while the children held the
sacks open and the women shovelled sand from the carts. Nobody spoke much. The rain
came in bursts, heavy and cold, and then stopped as suddenly as it had started.
"""


def quality() -> GopherQualityRule:
    return GopherQualityRule()


def repetition() -> GopherRepetitionRule:
    return GopherRepetitionRule()


# --- short ---------------------------------------------------------------------------


def test_short_rule_counts_cleaned_characters():
    assert short_rule(PROSE, ShortRule(min_chars=200)) is None
    assert short_rule("A short note.", ShortRule(min_chars=200)) == "short"
    # 400 raw characters, but punctuation and whitespace runs do not count.
    padded = "!!!! ---- .... " * 20 + "tiny text"
    assert len(padded) > 200
    assert short_rule(padded, ShortRule(min_chars=200)) == "short"
    cleaned = "x" * 199
    assert short_rule("ignored", ShortRule(min_chars=200), cleaned=cleaned) == "short"
    assert short_rule("ignored", ShortRule(min_chars=199), cleaned=cleaned) is None


# --- Gopher quality ------------------------------------------------------------------


def test_gopher_quality_keeps_prose():
    assert gopher_quality_rule(PROSE, quality()) is None
    licenses = sorted(glob.glob("/usr/share/common-licenses/GPL-3")) + sorted(glob.glob("/usr/share/common-licenses/Apache-2.0"))
    for path in licenses:
        assert gopher_quality_rule(Path(path).read_text(), quality()) is None, path


@pytest.mark.parametrize(
    "text, check",
    [
        ("The cat and the dog sat on the mat together.", "min_words"),
        (" ".join(["the"] * 100_001), "max_words"),
        ("a an of to in it be me we us the and " * 10, "mean_word_length"),
        (" ".join(["internationalisation", "responsibilities", "the", "and"] * 30), "mean_word_length"),
        (PROSE.replace(". ", ". #tag #news #river ") + " #more" * 20, "hash_ratio"),
        (PROSE.replace(" the ", " the... "), "ellipsis_ratio"),
        ("\n".join("\u2022 item number %d of the list with the words" % i for i in range(60)), "bullet_lines"),
        (
            "\n".join(
                ("and so the story of the village and the river went on for many more days"
                 + ("\u2026" if i % 2 else "."))
                for i in range(40)
            ),
            "ellipsis_lines",
        ),
        (PROSE + " 123 4567 89.0 1,234 (42) 7/8 = 99 %" * 40, "alpha_words"),
        ("Lorem caret vivid moss quickly jumps over lazy foxes beside quiet rivers " * 8, "stop_words"),
    ],
)
def test_gopher_quality_names_failed_check(text, check):
    assert gopher_quality_rule(text, quality()) == f"gopher_quality:{check}"


def test_gopher_quality_thresholds_are_configurable():
    few = "The cat and the dog sat on the mat together."
    assert gopher_quality_rule(few, GopherQualityRule(min_words=5)) is None


# --- Gopher repetition ---------------------------------------------------------------


def test_gopher_repetition_keeps_prose():
    assert gopher_repetition_rule(PROSE, repetition()) is None


LINES = [line for line in PROSE.split("\n") if line.strip()]


@pytest.mark.parametrize(
    "text, check",
    [
        ("\n\n".join([LINES[0], LINES[1], LINES[0], LINES[2], LINES[0], LINES[0]]), "dup_para_frac"),
        ("\n\n".join([PROSE.split("\n\n")[0]] * 2 + [LINES[5]] * 1 + [LINES[6], LINES[7], LINES[8], LINES[9]]), "dup_para_char_frac"),
        ("\n".join(LINES + LINES[:6]), "dup_line_frac"),
        ("\n".join(LINES + [" ".join(LINES[:5])] * 2), "dup_line_char_frac"),
        (" ".join(f"buy now {w}" for w in PROSE.split()[:40]), "top_2gram"),
        (" ".join(PROSE.split()) + " " + " ".join(PROSE.split()[:70]), "dup_5gram"),
    ],
)
def test_gopher_repetition_names_failed_check(text, check):
    assert gopher_repetition_rule(text, repetition()) == f"gopher_repetition:{check}"


def _reference_top(words: list[str], n: int) -> int:
    """datatrove's find_top_duplicate on " ".join-ed n-grams."""
    grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    gram, count = Counter(grams).most_common(1)[0]
    return len(gram) * count


def _reference_repeated(words: list[str], n: int) -> int:
    """datatrove's find_all_duplicate (n-grams compared as word sequences)."""
    unique, repeated, idx = set(), 0, 0
    while idx < len(words) - n + 1:
        gram = tuple(words[idx : idx + n])
        if gram in unique:
            repeated += sum(map(len, gram))
            idx += n
        else:
            unique.add(gram)
            idx += 1
    return repeated


def _real_texts(limit: int) -> list[str]:
    stdlib = sysconfig.get_paths()["stdlib"]
    paths = sorted(glob.glob(f"{stdlib}/**/*.py", recursive=True))[::40][:limit]
    paths += sorted(glob.glob("/usr/share/doc/*/copyright"))[::10][:limit]
    return [Path(p).read_text(errors="replace")[:30_000] for p in paths]


def test_ngram_statistics_match_plain_python_reference():
    texts = _real_texts(60) + [" ".join(["a", "b", "a", "b", "a", "b", "c"] * 9), "x y " * 30]
    assert len(texts) > 20
    for text in texts:
        words = text.split()
        if len(words) < 12:
            continue
        hashes = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
        prefix = np.concatenate([[0], np.cumsum([len(w) for w in words])])
        for n in (2, 3, 4):
            span = prefix[n:] - prefix[:-n] + (n - 1)
            got = filters._top_ngram_chars(filters._ngram_hashes(hashes, n), span)
            assert got == _reference_top(words, n)
        for n in range(5, 11):
            got = filters._repeated_ngram_chars(filters._ngram_hashes(hashes, n), n, prefix[n:] - prefix[:-n])
            assert got == _reference_repeated(words, n)


# --- C4 ------------------------------------------------------------------------------


def test_c4_rules():
    cfg = C4Rule()
    assert c4_rule(PROSE, cfg) is None
    assert c4_rule(PROSE + "\nLorem Ipsum dolor sit amet.", cfg) == "c4:lorem_ipsum"
    assert c4_rule(PROSE + "\nfunction f() { return 1; }", cfg) == "c4:curly_brace"
    assert c4_rule(PROSE + "{", C4Rule(lorem_ipsum=True, curly_brace=False)) is None


# --- selection per source and configuration -------------------------------------------


def test_rules_apply_per_source_in_order():
    cfg = FilterConfig(
        default=["short", "gopher_quality", "gopher_repetition", "c4"],
        per_source={"code": ["short"]},
    )
    keep = build_filter(cfg)
    code = "def area(radius):\n    return {'pi': 3.14159}['pi'] * radius ** 2\n" * 10
    assert keep(code, "code") is None
    assert keep(code, "RedPajamaC4") is not None
    assert keep(PROSE, "RedPajamaC4") is None
    assert keep("tiny", "code") == "short"  # the first failing rule in order wins
    assert keep(PROSE + "{", "RedPajamaC4") == "c4:curly_brace"
    assert reason_group("short") == "short"
    assert reason_group("gopher_repetition:dup_line_frac") == "quality"
    assert reason_group(None) is None


def test_prose_rules_do_not_wipe_out_code():
    cfg = _load(REPO / "configs/data/quality.yaml")
    keep = build_filter(cfg.filters)
    stdlib = sysconfig.get_paths()["stdlib"]
    sources = [Path(p).read_text(errors="replace") for p in sorted(glob.glob(f"{stdlib}/*.py"))[:150]]
    reasons = Counter(keep(text, "code") for text in sources)
    assert set(reasons) <= {None, "short"}
    assert reasons[None] > 0.9 * len(sources)
    # The same files as prose would mostly go: the rules do bite.
    as_prose = Counter(reason_group(keep(text, "RedPajamaC4")) for text in sources)
    assert as_prose["quality"] > 0.5 * len(sources)


def _load(path: Path, overrides=()):
    from pipeline.dedup import DedupStageConfig

    return load_config(DedupStageConfig, path, overrides)


def test_config_files_load():
    slim = _load(REPO / "configs/data/slimpajama.yaml").filters
    assert slim.default == ["short"] and slim.per_source == {}
    assert slim.short.min_chars == 200
    assert slim.gopher_repetition.top_ngram_char_frac == [(2, 0.20), (3, 0.18), (4, 0.16)]
    assert slim == FilterConfig()  # the code defaults mirror SlimPajama's YAML
    qual = _load(REPO / "configs/data/quality.yaml").filters
    assert "gopher_quality" in qual.default and "c4" in qual.default
    for code_source in ("code", "RedPajamaGithub", "RedPajamaArXiv"):
        assert qual.rules_for(code_source) == ["short"]
    over = _load(REPO / "configs/data/slimpajama.yaml", ["filters.default=[short,c4]", "filters.short.min_chars=50"])
    assert over.filters.default == ["short", "c4"] and over.filters.short.min_chars == 50


def test_config_rejects_unknown_rule(tmp_path):
    with pytest.raises(ConfigError, match="unknown rule 'gopher'"):
        _load(REPO / "configs/data/slimpajama.yaml", ["filters.default=[short,gopher]"])
    with pytest.raises(ConfigError, match="min_char"):
        _load(REPO / "configs/data/slimpajama.yaml", ["filters.short.min_char=5"])


def test_each_rule_name_runs_its_own_rule():
    # A rule alone gives no reason or its own; each rejects its text. A name dispatched
    # to another rule (or to a fall-through default) would name another reason.
    rejected_by = {
        "short": "tiny",
        "gopher_quality": " ".join(word * 3 for word in PROSE.split()),  # words three times too long
        "gopher_repetition": "\n".join([PROSE.split("\n")[0]] * 12),
        "c4": PROSE + "\nLorem ipsum dolor sit amet.",
    }
    assert sorted(rejected_by) == sorted(filters.RULES)
    for name, text in rejected_by.items():
        for rule in filters.RULES:
            reason = build_filter(FilterConfig(default=[rule]))(text, "web")
            assert reason is None or reason.split(":")[0] == rule, (name, rule, reason)
            assert reason is not None or rule != name, name


def test_an_unknown_rule_is_a_config_error_before_the_job_starts(tmp_path, capsys):
    from pipeline.dedup.__main__ import main

    config = tmp_path / "dedup.yaml"
    config.write_text(f"base: {REPO / 'configs/data/slimpajama.yaml'}\nfilters:\n  per_source:\n    web: [short, c5]\n")
    with pytest.raises(ConfigError, match=r"filters.per_source.web: unknown rule 'c5' \(known rules: short, gopher_quality"):
        _load(config)
    with pytest.raises(SystemExit) as stopped:
        main(["--config", str(config), f"input={tmp_path / 'corpus'}", f"output={tmp_path / 'out'}"])
    assert stopped.value.code == 2 and "unknown rule 'c5'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # stopped at config load: no stage folder, no Ray
    unchecked = FilterConfig()
    unchecked.default = ["c5"]  # changed after validation: still never another rule
    with pytest.raises(KeyError, match="c5"):
        build_filter(unchecked)


def test_line_and_letter_counts_match_plain_python():
    texts = _real_texts(40) + ["\u2022 a\n - b\n\n  \nc...\nd\u2026  \n...e", "", "x"]
    bullets = filters._bullet_line(("\u2022", "-"))
    for text in texts:
        lines = [line.strip() for line in text.split("\n")]
        lines = [line for line in lines if line and not line.isspace()]
        framed = "\n" + text + "\n"
        assert len(filters._NON_BLANK_LINE.findall(framed)) == len(lines)
        assert len(bullets.findall(framed)) == sum(line.startswith(("\u2022", "-")) for line in lines)
        assert len(filters._ELLIPSIS_LINE.findall(framed)) == sum(line.endswith(("...", "\u2026")) for line in lines)
        words = text.split()
        assert filters._words_without_letter(words) == sum(1 for w in words if not filters._LETTER.search(w))
