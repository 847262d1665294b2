"""One source for every default: the shipped YAML files and the dataclass defaults agree.

- A config class with a default for every field has one file that IS its defaults
  (slimpajama.yaml for the dedup stage): loading it gives exactly ``Class()``.
- Any other shipped file may only restate a dataclass default, never contradict one.
- A file that extends a base (``base: other.yaml``) states only what it changes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from common.config import BASE_KEY, load_config, read_yaml
from model.config import BTLMConfig
from model.sample_text import GenerationSettings
from pipeline.decontaminate import DecontaminateConfig
from pipeline.dedup import DedupStageConfig, band_layout
from pipeline.sample import SampleConfig
from pipeline.tokenize import TokenizeConfig
from train.config import TrainConfig
from train.scaling.collapse import CollapseConfig
from train.scaling.coord_check import CoordCheckConfig
from train.scaling.sweep_config import SweepConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"

# Every shipped config file and the class it configures.
CLASS_OF = {
    "data/sample.yaml": SampleConfig,
    "data/slimpajama.yaml": DedupStageConfig,
    "data/quality.yaml": DedupStageConfig,
    "data/tokenize.yaml": TokenizeConfig,
    "data/decontaminate.yaml": DecontaminateConfig,
    "train/demo.yaml": TrainConfig,
    "train/family-w32.yaml": TrainConfig,
    "train/family-w48.yaml": TrainConfig,
    "train/family-w64.yaml": TrainConfig,
    "train/coord_check.yaml": CoordCheckConfig,
    "train/mup_sweep.yaml": SweepConfig,
    "train/collapse.yaml": CollapseConfig,
    "model/generation.yaml": GenerationSettings,
    **{f"model/{p.name}": BTLMConfig for p in (CONFIGS / "model").glob("*.yaml") if p.name != "generation.yaml"},
}
# The file that holds a class's defaults, where the class has a default for every field.
DEFAULTS_FILE = {DedupStageConfig: "data/slimpajama.yaml"}


def _stated(path: Path) -> dict:
    """The keys a file itself states (its base not merged in)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data.pop(BASE_KEY, None)
    return data


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _defaults(cls) -> dict[str, object]:
    """Dotted name -> default of every field (nested dataclasses included) that has one."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(value):
            out.update({f"{f.name}.{k}": v for k, v in _flatten(dataclasses.asdict(value)).items()})
        else:
            out[f.name] = value
    return out


def _normalise(value):
    return [_normalise(v) for v in value] if isinstance(value, (list, tuple)) else value


def test_every_shipped_config_is_listed_and_loads():
    shipped = {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")}
    assert {n for n in shipped - set(CLASS_OF) if not n.startswith("eval/")} == set()
    for name, cls in CLASS_OF.items():
        if cls is BTLMConfig:
            BTLMConfig.from_yaml(CONFIGS / name)
        else:
            load_config(cls, CONFIGS / name)


@pytest.mark.parametrize("cls", sorted(DEFAULTS_FILE, key=lambda c: c.__name__))
def test_defaults_file_equals_dataclass_defaults(cls):
    assert load_config(cls, CONFIGS / DEFAULTS_FILE[cls]) == cls()


def test_dedup_defaults_derive_the_yaml_band_layout():
    from_yaml = load_config(DedupStageConfig, CONFIGS / "data" / "slimpajama.yaml")
    assert band_layout(DedupStageConfig()) == band_layout(from_yaml) == (21, 6)


@pytest.mark.parametrize("name", sorted(CLASS_OF))
def test_no_file_contradicts_a_dataclass_default_it_restates(name):
    """A file without a base may restate a default (it documents it), but never with
    another value unless it is a deliberate variant of the class (a different model,
    output folder or rule set): those are the keys listed per class below."""
    cls = CLASS_OF[name]
    if cls is BTLMConfig or BASE_KEY in yaml.safe_load((CONFIGS / name).read_text()):
        return  # model files are models, not defaults; based files are checked below
    defaults = _defaults(cls)
    stated = _flatten(_stated(CONFIGS / name))
    contradicting = {k: (v, defaults[k]) for k, v in stated.items()
                     if k in defaults and _normalise(v) != _normalise(defaults[k])}
    assert not contradicting, f"{name} contradicts the defaults of {cls.__name__}: {contradicting}"


@pytest.mark.parametrize("name", sorted(n for n in CLASS_OF if BASE_KEY in yaml.safe_load((CONFIGS / n).read_text())))
def test_based_files_state_only_differences(name):
    path = CONFIGS / name
    base = read_yaml(path.parent / yaml.safe_load(path.read_text())[BASE_KEY])
    base_flat = _flatten(base)
    same = {k: v for k, v in _flatten(_stated(path)).items() if k in base_flat and base_flat[k] == v}
    assert not same, f"{name} restates values of its base: {same}"


def test_base_cycle_and_missing_base_are_errors(tmp_path):
    from common.config import ConfigError

    (tmp_path / "a.yaml").write_text("base: b.yaml\nx: 1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        read_yaml(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml does not exist \(the base of"):
        read_yaml(tmp_path / "c.yaml")


def test_base_merges_nested_sections(tmp_path):
    (tmp_path / "base.yaml").write_text("lsh: {threshold: 0.8, verify: exact}\noutput: a\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nlsh: {threshold: 0.7}\n")
    assert read_yaml(tmp_path / "child.yaml") == {"lsh": {"threshold": 0.7, "verify": "exact"}, "output": "a"}
