"""Every snippet of the README's "Use your model" section runs, on a tiny run checkpoint:
the Python blocks in a fresh process (the one that loads the export in a process that
cannot import the project), the export command as a command."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers.hf_support import REPO, run_fresh, run_isolated, tiny_model, write_run_checkpoint

pytest.importorskip("transformers")

README_CHECKPOINT = "runs/demo/checkpoints/step-00000048"
README_EXPORT = "exports/demo"


def use_your_model_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Use your model")
    return text[start : text.index("\n## ", start + 1)]


def python_blocks(section: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.slow
def test_readme_use_your_model_snippets_run(tmp_path):
    section = use_your_model_section()
    blocks = python_blocks(section)
    assert len(blocks) == 3 and "get_mup_param_groups" in blocks[1] and "trust_remote_code=True" in blocks[2]
    checkpoint = write_run_checkpoint(tiny_model("alibi"), tmp_path / "run", step=48)
    export = tmp_path / "export"

    def localize(code: str) -> str:
        return (code.replace(README_CHECKPOINT, str(checkpoint)).replace(README_EXPORT, str(export))
                .replace("runs/demo/continued", str(tmp_path / "continued")))

    # 1 + 2: Auto classes, pipeline, muP groups for continued training (one session, as a reader runs them)
    script = "import json, sys\n" + localize(blocks[0] + blocks[1]) + "print(json.dumps({'loss': float(loss)}))\n"
    assert run_fresh(script, {})["loss"] > 0
    assert (tmp_path / "continued" / "config.json").is_file()
    # 3: the export command, exactly as written
    command = next(line.strip() for line in section.splitlines() if line.strip().startswith("python -m model.export"))
    args = shlex.split(localize(command))
    proc = subprocess.run([sys.executable, *args[1:]], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # 4: loading the export where the project does not exist
    work = tmp_path / "elsewhere"
    work.mkdir()
    run_isolated(localize(blocks[2]) + "import json\nprint(json.dumps({}))\n", {}, cwd=work)
