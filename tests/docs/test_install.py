"""Installed, the project works from any directory: the default configs ship with the package
(a relative ``configs/...`` path missing under the working directory is read from the installed
copy, a user's own file always wins), and the wheel's ``slimpajama-btlm`` command runs a stage
from an empty folder with nothing of the source tree reachable."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common import cli
from common.config import ConfigError, load_config, read_yaml, shipped_path
from pipeline.dedup.config import DedupStageConfig

REPO = Path(__file__).resolve().parents[2]


def test_shipped_default_found_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = shipped_path("configs/data/slimpajama.yaml")
    assert found.is_absolute() and found.read_bytes() == (REPO / "configs/data/slimpajama.yaml").read_bytes()
    assert shipped_path("pipeline/assets/tokenizer.json").is_file()
    # quality.yaml's `base: slimpajama.yaml` chain resolves inside the shipped copy
    cfg = load_config(DedupStageConfig, "configs/data/quality.yaml", ["input=in", "output=out"])
    assert "gopher_quality" in cfg.filters.default


def test_user_file_wins_and_its_missing_base_falls_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "configs" / "data"
    own.mkdir(parents=True)
    # the user's own quality.yaml (here: the shipped one with another output) extends a base it does not copy
    shipped = yaml.safe_load((REPO / "configs/data/quality.yaml").read_text(encoding="utf-8"))
    (own / "quality.yaml").write_text(yaml.safe_dump({**shipped, "output": "mine"}), encoding="utf-8")
    data = read_yaml("configs/data/quality.yaml")
    assert data["output"] == "mine" and "minhash" in data  # own key, and the shipped base under it
    assert shipped_path("configs/data/quality.yaml") == Path("configs/data/quality.yaml")


def test_missing_file_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="configs/data/nothing.yaml does not exist"):
        read_yaml("configs/data/nothing.yaml")
    assert shipped_path("data/sample") == Path("data/sample")  # only shipped folders fall back


def test_every_subcommand_forwards_to_a_stage_main(capsys):
    for name, (module, _) in cli.COMMANDS.items():
        assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"
    with pytest.raises(SystemExit) as stop:
        cli.main(["dedup", "--help"])  # the stage's own argparse help
    assert stop.value.code == 0 and "usage: python -m pipeline.dedup" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert all(f"\n  {name} " in listing for name in cli.COMMANDS)
    assert cli.main(["nonsense"]) == 2 and "unknown command 'nonsense'" in capsys.readouterr().err


def source_copy(dest: Path) -> Path:
    """The files a wheel is built from (pyproject's package list), copied so the build writes
    nothing into the source tree."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    packages = tomllib.loads(pyproject)["tool"]["setuptools"]["packages"]["find"]["include"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in {p.rstrip("*") for p in packages}:
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    return dest


@pytest.mark.slow
def test_wheel_runs_a_stage_from_an_empty_directory(tmp_path):
    src = source_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(tmp_path / "wheels"), str(src)], check=True, capture_output=True)
    wheel = next((tmp_path / "wheels").glob("slimpajama_btlm-*.whl"))

    # A fresh environment whose dependencies come from this interpreter's site-packages as plain
    # path entries: their .pth files (an editable install's finder among them) are not run, so
    # the project itself can only come from the wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python, command = venv / "bin" / "python", venv / "bin" / "slimpajama-btlm"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "RAY_ADDRESS")}
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--quiet",
                    str(wheel)], check=True, capture_output=True, env=env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([python, "-c", "import json, common, configs, pipeline; "
                            "print(json.dumps([m.__file__ for m in (common, configs, pipeline)]))"],
                           cwd=work, env=env, check=True, capture_output=True, text=True)
    for module_file in json.loads(where.stdout):
        assert Path(module_file).resolve().is_relative_to(venv.resolve()), module_file

    listing = subprocess.run([command, "--help"], cwd=work, env=env, check=True, capture_output=True, text=True)
    for name in ("corpus", "dedup", "tokenize", "pretrain", "stats", "eval", "export"):
        assert f"\n  {name} " in listing.stdout
    own_help = subprocess.run([command, "dedup", "--help"], cwd=work, env=env, check=True, capture_output=True,
                              text=True)
    assert "configs/data/slimpajama.yaml" in own_help.stdout

    run = subprocess.run([command, "corpus", "output=corpus", "max_total_bytes=120000"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads((work / "corpus" / "manifest.json").read_text(encoding="utf-8"))
    defaults = yaml.safe_load((REPO / "configs/data/sample.yaml").read_text(encoding="utf-8"))
    assert manifest["config"]["seed"] == defaults["seed"] and manifest["config"]["chunk_bytes"] == defaults["chunk_bytes"]
    assert manifest["total"]["documents"] > 0
    chunks = sorted((work / "corpus").glob("*/chunk-*.jsonl.zst"))
    assert len(chunks) == sum(len(s["chunks"]) for s in manifest["sources"].values())
