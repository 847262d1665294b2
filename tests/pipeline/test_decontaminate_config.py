"""configs/data/decontaminate.yaml is the decontamination stage's defaults: loading it
gives exactly ``DecontaminateConfig()``, so the YAML and the code cannot disagree."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import load_config
from pipeline.decontaminate import DecontaminateConfig
from pipeline.decontaminate.config import DEFAULT_CONFIG

REPO = Path(__file__).resolve().parents[2]


def test_yaml_equals_dataclass_defaults():
    assert load_config(DecontaminateConfig, REPO / DEFAULT_CONFIG, []) == DecontaminateConfig()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="eval_sets"):
        load_config(DecontaminateConfig, REPO / DEFAULT_CONFIG, ["eval_sets=[]"])
    with pytest.raises(ValueError):
        load_config(DecontaminateConfig, REPO / DEFAULT_CONFIG, ["policy.action=erase"])
    with pytest.raises(ValueError, match="ngrams"):
        load_config(DecontaminateConfig, REPO / DEFAULT_CONFIG, ["ngrams.n=0"])
