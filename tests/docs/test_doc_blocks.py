"""Every code block of README.md and docs/*.md is checked, as a reader would use it.

- Python blocks run: a page's blocks one after another in one fresh process, in a workspace
  that holds what the pages name (a run checkpoint at ``runs/demo/checkpoints/step-00000048``,
  token shards under ``data/tokens``); ``configs/...`` paths resolve to the shipped defaults.
- Shell commands name what exists: ``python -m``/``-m`` modules import, ``make`` targets are in
  the Makefile, ``slimpajama-btlm`` subcommands are in its table, and project paths
  (``configs/...``, ``bench/...``, ...) and relative links exist.

A marker, an HTML comment on the line before a fenced block, changes how it is tested:

    <!-- doc-test: run -->           a shell block whose commands run (before the page's Python blocks)
    <!-- doc-test: isolated -->      a Python block run where the project cannot be imported
    <!-- doc-test: skip REASON -->   illustrative only (an extra built from source, a GPU, a download);
                                     counted (at most MAX_OPT_OUTS) and checked to be valid code
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.cli import COMMANDS
from tests.helpers.hf_support import real_texts, run_isolated, tiny_model, write_gpt2_shards, write_run_checkpoint

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKERS = ("run", "isolated", "skip")
MAX_OPT_OUTS = 2
CHECKPOINT = "runs/demo/checkpoints/step-00000048"

FENCE = re.compile(r"^(?:<!-- doc-test: (?P<marker>\S+)(?: (?P<reason>[^\n]*?))? -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)^```[ \t]*$",
                   re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
MODULE = re.compile(r"(?<![\w-])-m[ \t]+([A-Za-z_][\w.]*)")
MAKE = re.compile(r"\bmake[ \t]+([a-z][\w-]*)")
SUBCOMMAND = re.compile(r"\bslimpajama-btlm[ \t]+([a-z][\w-]*)")
DATA_SUFFIXES = (".jsonl", ".zst", ".parquet", ".arrow")  # a corpus's files (train/chunk1/...), not the project's
PROJECT_PATH = re.compile(r"(?<![\w/.$-])((?:configs|bench|pipeline|model|train|common|tests|docs)/[^\s`'\"(),;|\]]*)")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    code: str
    marker: str | None
    reason: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start("lang")) + 1
        found.append(Block(page, line, m["lang"], m["code"], m["marker"], (m["reason"] or "").strip()))
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
OPT_OUTS = [b for b in ALL_BLOCKS if b.marker == "skip"]
RUN_PAGES = [p for p in PAGES if any(b.lang == "python" and b.marker != "skip" or b.marker == "run"
                                     for b in blocks(p))]


def page_id(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


def test_markers_are_known_and_opt_outs_few():
    for b in ALL_BLOCKS:
        assert b.marker in (None, *MARKERS), f"{b.where}: unknown doc-test marker {b.marker!r}"
        assert b.marker != "skip" or b.reason, f"{b.where}: a skip marker says why"
        assert b.marker != "run" or b.lang == "sh", f"{b.where}: only shell blocks run as commands"
        assert b.marker != "isolated" or b.lang == "python", f"{b.where}: only Python blocks run isolated"
    assert len(OPT_OUTS) <= MAX_OPT_OUTS, [f"{b.where}: {b.reason}" for b in OPT_OUTS]
    assert sum(b.lang == "python" for b in ALL_BLOCKS) >= 6  # the pages' examples are found at all


@pytest.mark.parametrize("block", OPT_OUTS, ids=lambda b: b.where)
def test_opted_out_blocks_are_still_valid_code(block):
    """A block that cannot run here (an extra built from source, a framework not installed)
    must still be code a reader can paste: valid Python, and not empty."""
    assert block.code.strip(), f"{block.where}: empty block"
    if block.lang == "python":
        compile(block.code, block.where, "exec")


# --- shell commands, paths and links ------------------------------------------------------


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, flags=re.M))


def command_text(page: Path) -> str:
    """The page's shell blocks and inline code: where commands, modules and paths are named."""
    text = page.read_text(encoding="utf-8")
    shell = [b.code for b in blocks(page) if b.lang != "python"]
    prose = FENCE.sub("", text)
    return "\n".join(shell + INLINE.findall(prose))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_commands_name_what_exists(page):
    code = command_text(page)
    targets = makefile_targets()
    missing = []
    for module in set(MODULE.findall(code)):
        if importlib.util.find_spec(module) is None:
            missing.append(f"module {module}")
    missing += [f"make target {t}" for t in set(MAKE.findall(code)) if t not in targets]
    missing += [f"subcommand {c}" for c in set(SUBCOMMAND.findall(code)) if c not in COMMANDS]
    for path in set(PROJECT_PATH.findall(code)):
        path = path.rstrip(".:")
        if not any(c in path for c in "{}$*<>") and not path.endswith(DATA_SUFFIXES) and not (REPO / path).exists():
            missing.append(f"path {path}")
    assert not missing, f"{page_id(page)} names what does not exist: {sorted(missing)}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for link in LINK.findall(text):
        target = link.split("#", 1)[0]
        if target and not re.match(r"[a-z]+:", target) and not (page.parent / target).exists():
            broken.append(link)
    assert not broken, f"{page_id(page)}: broken links {broken}"


# --- running the blocks ------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A working directory holding what the pages' examples read."""
    ws = tmp_path_factory.mktemp("docs-workspace")
    checkpoint = write_run_checkpoint(tiny_model("alibi"), ws / "runs" / "demo", step=48)
    assert checkpoint == ws / CHECKPOINT
    write_gpt2_shards(ws / "data" / "tokens", real_texts()[:20], 2048, "train")
    return ws


def doc_env(ws: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               TOKENIZERS_PARALLELISM="false", HF_DATASETS_CACHE=str(ws / ".cache" / "datasets"),
               HF_MODULES_CACHE=str(ws / "hf_modules"))
    return env


def run_command(line: str, ws: Path, where: str) -> None:
    argv = shlex.split(line, comments=True)
    if argv[0] == "slimpajama-btlm":
        argv = [sys.executable, "-m", "common.cli", *argv[1:]]
    elif argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    else:
        pytest.fail(f"{where}: a run block holds slimpajama-btlm or python commands only: {line}")
    proc = subprocess.run(argv, cwd=ws, env=doc_env(ws), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{where}: {line}\n{proc.stderr[-4000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES, ids=page_id)
def test_page_blocks_run(page, workspace):
    page_blocks = blocks(page)
    for b in page_blocks:
        if b.marker == "run":
            for line in filter(str.strip, b.code.splitlines()):
                run_command(line, workspace, b.where)
    session = [b for b in page_blocks if b.lang == "python" and b.marker is None]
    if session:
        script = workspace / f"doc_{page.stem}.py"
        script.write_text("".join(f"# --- {b.where}\n{b.code}" for b in session), encoding="utf-8")
        proc = subprocess.run([sys.executable, str(script)], cwd=workspace, env=doc_env(workspace),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{script.name} (blocks of {page_id(page)}):\n{proc.stderr[-4000:]}"
    for b in page_blocks:
        if b.marker == "isolated":
            run_isolated(f"# {b.where}\n{b.code}\nimport json\nprint(json.dumps({{}}))\n", {}, cwd=workspace)
