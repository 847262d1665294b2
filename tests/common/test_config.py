"""The one config loader: typed dataclasses from YAML plus dotted key=value overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from common.config import ConfigError, load_config, parse_overrides, stage_cli, to_json

REPO = Path(__file__).resolve().parents[2]


@dataclass
class MinHash:
    num_perm: int
    threshold: float
    bands: Optional[int] = None


@dataclass
class Filter:
    name: str
    min_chars: int = 200


@dataclass
class Demo:
    input: str
    output: str
    minhash: MinHash
    mode: Literal["fast", "exact"] = "fast"
    seq_lens: list[int] = field(default_factory=lambda: [2048])
    filters: list[Filter] = field(default_factory=list)
    sources: dict[str, float] = field(default_factory=dict)
    enabled: bool = True
    note: Optional[str] = None


GOOD = """\
input: data/sample
output: data/dedup
minhash:
  num_perm: 128
  threshold: 0.8
mode: exact
seq_lens: [2048, 8192]
filters:
  - {name: short, min_chars: 100}
  - {name: lorem}
sources: {code: 0.5, docs: 0.25}
"""


@pytest.fixture
def good_yaml(tmp_path) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(GOOD, encoding="utf-8")
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_nested_lists_dicts_literals(good_yaml):
    cfg = load_config(Demo, good_yaml)
    assert cfg.minhash == MinHash(num_perm=128, threshold=0.8, bands=None)
    assert cfg.mode == "exact"
    assert cfg.seq_lens == [2048, 8192]
    assert cfg.filters == [Filter("short", 100), Filter("lorem", 200)]
    assert cfg.sources == {"code": 0.5, "docs": 0.25}
    assert cfg.enabled is True and cfg.note is None


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, GOOD + "treshold: 0.7\n")
    with pytest.raises(ConfigError) as err:
        load_config(Demo, path)
    assert "unknown key 'treshold'" in str(err.value) and str(path) in str(err.value)


def test_unknown_nested_key_names_its_full_path(tmp_path):
    path = write(tmp_path, GOOD.replace("  threshold: 0.8\n", "  threshold: 0.8\n  num_perms: 64\n"))
    with pytest.raises(ConfigError) as err:
        load_config(Demo, path)
    assert "'minhash.num_perms'" in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_key_in_list_item(tmp_path):
    path = write(tmp_path, GOOD.replace("{name: lorem}", "{name: lorem, min_char: 3}"))
    with pytest.raises(ConfigError, match="min_char"):
        load_config(Demo, path)


@pytest.mark.parametrize(
    "override, key",
    [
        ("minhash.num_perm=many", "minhash.num_perm"),
        ("minhash.threshold=high", "minhash.threshold"),
        ("minhash.num_perm=1.5", "minhash.num_perm"),
        ("enabled=1", "enabled"),  # an int is not a bool
        ("minhash.num_perm=true", "minhash.num_perm"),  # a bool is not an int
        ("seq_lens=2048", "seq_lens"),
        ("seq_lens=[2048,x]", "seq_lens[1]"),
        ("output=[a,b]", "output"),
        ("sources.code=lots", "sources.code"),
        ("minhash=0.8", "minhash"),
    ],
)
def test_wrong_type_names_key(good_yaml, override, key):
    with pytest.raises(ConfigError) as err:
        load_config(Demo, good_yaml, [override])
    assert repr(key) in str(err.value) or key in str(err.value)
    assert str(good_yaml) in str(err.value)


def test_literal_rejects_other_values(good_yaml):
    with pytest.raises(ConfigError) as err:
        load_config(Demo, good_yaml, ["mode=approximate"])
    assert "'mode'" in str(err.value) and "fast" in str(err.value) and "exact" in str(err.value)
    assert load_config(Demo, good_yaml, ["mode=fast"]).mode == "fast"


def test_nested_dotted_overrides(good_yaml):
    cfg = load_config(Demo, good_yaml, ["minhash.threshold=0.7", "minhash.bands=14", "output=elsewhere"])
    assert cfg.minhash == MinHash(num_perm=128, threshold=0.7, bands=14)  # siblings kept
    assert cfg.output == "elsewhere" and cfg.input == "data/sample"


def test_override_adds_dict_entry_and_replaces_list(good_yaml):
    cfg = load_config(Demo, good_yaml, ["sources.books=0.1", "seq_lens=[512]", "filters=[]"])
    assert cfg.sources == {"code": 0.5, "docs": 0.25, "books": 0.1}
    assert cfg.seq_lens == [512] and cfg.filters == []


def test_override_of_unknown_key_is_an_error(good_yaml):
    with pytest.raises(ConfigError, match="'minhash.thresold'"):
        load_config(Demo, good_yaml, ["minhash.thresold=0.7"])


def test_yaml_scalars_in_overrides(good_yaml):
    cfg = load_config(Demo, good_yaml, ["minhash.threshold=1", "note=null", "enabled=false", "minhash.num_perm=1e2"])
    assert cfg.minhash.threshold == 1.0 and isinstance(cfg.minhash.threshold, float)
    assert cfg.note is None and cfg.enabled is False
    assert cfg.minhash.num_perm == 100 and isinstance(cfg.minhash.num_perm, int)
    assert load_config(Demo, good_yaml, ["note=hello world"]).note == "hello world"
    # quoting keeps a YAML-looking value a string
    assert load_config(Demo, good_yaml, ["output='123'"]).output == "123"


def test_parse_overrides_builds_a_tree():
    assert parse_overrides(["a.b.c=1", "a.d=x", "e=[1, 2]", "f="]) == {
        "a": {"b": {"c": 1}, "d": "x"},
        "e": [1, 2],
        "f": "",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["no_equals_sign"])


def test_optional_accepts_value_or_null(good_yaml):
    assert load_config(Demo, good_yaml, ["minhash.bands=9"]).minhash.bands == 9
    assert load_config(Demo, good_yaml, ["minhash.bands=null"]).minhash.bands is None
    with pytest.raises(ConfigError, match="minhash.bands"):
        load_config(Demo, good_yaml, ["minhash.bands=nine"])


def test_missing_required_key(tmp_path):
    path = write(tmp_path, "input: a\noutput: b\n")
    with pytest.raises(ConfigError) as err:
        load_config(Demo, path)
    assert "minhash" in str(err.value) and str(path) in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Demo, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Demo, write(tmp_path, "input: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Demo, write(tmp_path, "- just\n- a list\n"))


def test_to_json_is_canonical(good_yaml):
    a = to_json(load_config(Demo, good_yaml))
    b = to_json(load_config(Demo, good_yaml, ["minhash.threshold=0.8"]))
    assert a == b and '"threshold":0.8' in a


def test_stage_cli_reports_errors_and_help(good_yaml, capsys):
    cfg, _ = stage_cli(Demo, "demo stage", str(good_yaml), argv=["minhash.threshold=0.5"])
    assert cfg.minhash.threshold == 0.5
    with pytest.raises(SystemExit) as exit_info:
        stage_cli(Demo, "demo stage", str(good_yaml), argv=["bogus=1"])
    assert exit_info.value.code == 2
    assert "'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        stage_cli(Demo, "demo stage", str(good_yaml), argv=["--help"])
    assert exit_info.value.code == 0
    assert "key=value" in capsys.readouterr().out


def test_every_shipped_data_config_of_the_sample_corpus_loads():
    from pipeline.sample import SampleConfig

    cfg = load_config(SampleConfig, REPO / "configs" / "data" / "sample.yaml")
    assert set(cfg.sources) == {"code", "licenses", "manpages", "docs"}
    assert cfg.output == "data/sample"
