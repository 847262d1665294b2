"""`python -m model.export --format hf`, proven from the other side: a process that cannot
import the project loads the BTLM folder with trust_remote_code=True and the StableLM folder
with plain transformers, and gets the project's logits; init_from brings both back."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.export.__main__ import main as export_main
from model.hub import export as hub
from model.hub.remote_code import RemoteCodeError, copy_modules
from pipeline.tokenizer import load_tokenizer
from tests.helpers.hf_support import (
    REPO,
    TEXTS,
    real_texts,
    relative_difference,
    run_isolated,
    tiny_model,
    write_gpt2_shards,
    write_run_checkpoint,
)
from train.checkpoint import PROJECT_TOKENIZER

pytest.importorskip("transformers")

ISOLATED_SCRIPT = """
import json
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, StableLmForCausalLM

spec = json.loads(sys.argv[1])
ids = load_file(spec["ids"])["ids"]
out, tensors = {}, {}
for kind, folder in spec["folders"].items():
    remote = spec["layouts"][kind] == "btlm"
    if remote:
        m = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    else:
        m = StableLmForCausalLM.from_pretrained(folder)
        assert type(AutoModelForCausalLM.from_pretrained(folder)).__name__ == "StableLmForCausalLM"
    with torch.no_grad():
        tensors[kind] = m(ids).logits.contiguous()
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    out[kind] = {"class": type(m).__name__, "module": type(m).__module__,
                 "greedy": m.generate(ids[:1, :10], max_new_tokens=16, do_sample=False)[0].tolist(),
                 "token_ids": [tok(t)["input_ids"] for t in spec["texts"]]}
    if remote:  # saving keeps the folder standalone: code files and auto_map come along
        m.save_pretrained(spec["resaved"] + "-" + kind)
        again = AutoModelForCausalLM.from_pretrained(spec["resaved"] + "-" + kind, trust_remote_code=True)
        with torch.no_grad():
            out[kind]["resaved_equal"] = bool(torch.equal(again(ids).logits, tensors[kind]))
save_file(tensors, spec["logits"])
print(json.dumps(out))
"""

LAYOUTS = {"alibi": "btlm", "rope": "stablelm", "rope_tied": "stablelm", "renamed": "btlm"}


def renamed_source(root: Path) -> Path:
    """A copy of the project's model/ and common/ where a module the remote code needs is renamed."""
    for package in ("model", "common"):
        for path in (REPO / package).rglob("*.py"):
            target = root / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text(encoding="utf-8").replace("model.attention.positions",
                                                                           "model.attention.position_bias"),
                              encoding="utf-8")
    (root / "model" / "attention" / "positions.py").rename(root / "model" / "attention" / "position_bias.py")
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    models = {"alibi": tiny_model("alibi", seed=4), "rope": tiny_model("rope", seed=5),
              "rope_tied": tiny_model("rope", seed=6, tie_word_embeddings=True)}
    checkpoints = {kind: write_run_checkpoint(m, tmp / "runs" / kind) for kind, m in models.items()}
    folders = {}
    for kind, ckpt in checkpoints.items():
        folders[kind] = tmp / "out" / kind
        extra = ["--max-shard-size", "400KB"] if kind == "alibi" else []
        proc = subprocess.run([sys.executable, "-m", "model.export", str(ckpt), str(folders[kind]), "--format", "hf",
                               *extra], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    models["renamed"] = models["alibi"]
    folders["renamed"] = tmp / "out" / "renamed"
    hub.export_hub(models["alibi"], folders["renamed"], PROJECT_TOKENIZER, source_root=renamed_source(tmp / "src"))
    ids = torch.randint(0, 50257, (2, 33), generator=torch.Generator().manual_seed(7))
    save_file({"ids": ids}, str(tmp / "ids.safetensors"))
    work = tmp / "elsewhere"
    work.mkdir()
    spec = {"folders": {k: str(v) for k, v in folders.items()}, "layouts": LAYOUTS, "texts": TEXTS,
            "ids": str(tmp / "ids.safetensors"), "logits": str(tmp / "logits.safetensors"),
            "resaved": str(tmp / "resaved")}
    result = run_isolated(ISOLATED_SCRIPT, spec, cwd=work)
    return {"models": models, "folders": folders, "checkpoints": checkpoints, "ids": ids, "result": result,
            "logits": load_file(str(tmp / "logits.safetensors")), "tmp": tmp}


def test_btlm_folder_has_the_published_layout(exported):
    folder = exported["folders"]["alibi"]
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "configuration_btlm.py", "modeling_btlm.py", "model.safetensors.index.json",
            "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "README.md"} <= names
    assert "model.safetensors" not in names and len([n for n in names if n.startswith("model-0")]) >= 2
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "btlm" and config["auto_map"]["AutoModelForCausalLM"] == "modeling_btlm.BTLMForCausalLM"
    for code in folder.glob("*.py"):  # nothing refers back to the project
        text = code.read_text()
        assert "from model" not in text and "import model" not in text and "from common" not in text, code.name


def test_stablelm_folder_is_native(exported):
    config = json.loads((exported["folders"]["rope"] / "config.json").read_text())
    assert config["model_type"] == "stablelm" and "auto_map" not in config
    assert not list(exported["folders"]["rope"].glob("*.py"))
    tied = json.loads((exported["folders"]["rope_tied"] / "config.json").read_text())
    assert tied["tie_word_embeddings"] is False  # muP multipliers folded into two different matrices


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_isolated_transformers_gives_the_projects_logits(exported, kind):
    r = exported["result"][kind]
    model = exported["models"][kind]
    assert r["class"] == ("BTLMForCausalLM" if LAYOUTS[kind] == "btlm" else "StableLmForCausalLM")
    if LAYOUTS[kind] == "btlm":
        assert r["module"].startswith("transformers_modules.")  # the folder's own code, not the project's
        assert r["resaved_equal"]
    with torch.no_grad():
        ours = model(exported["ids"]).logits
    assert relative_difference(ours, exported["logits"][kind]) <= 1e-5
    greedy = model.generate(exported["ids"][:1, :10], 16, temperature=0.0, eos_token_id=50256)[0].tolist()
    assert r["greedy"] == greedy
    assert r["token_ids"] == [load_tokenizer().encode(text).ids for text in TEXTS]


@pytest.fixture(scope="module")
def gpt2_tokens(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt2-tokens")
    texts = real_texts()
    for seq_len in (64, 256):
        write_gpt2_shards(root, texts[4:], seq_len, "train")
        write_gpt2_shards(root, texts[:4], seq_len, "validation")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["alibi", "rope", "rope_tied"])
def test_init_from_an_export_continues_from_the_same_model(exported, gpt2_tokens, tmp_path, kind):
    from tests.helpers.train_support import tiny_config
    from train.distributed import init_distributed
    from train.trainer import Trainer

    config = tiny_config(tmp_path, gpt2_tokens, init_from=str(exported["folders"][kind]))
    trainer = Trainer(config, tmp_path / "run", init_distributed())
    with torch.no_grad():
        ours = exported["models"][kind](exported["ids"]).logits
        assert relative_difference(ours, trainer.model.eval()(exported["ids"]).logits) <= 1e-5
    record = trainer.train_step()  # and it trains from there: one finite step that moves the weights
    assert record["step"] == 1 and not record["skipped"]
    assert math.isfinite(record["loss"]) and record["grad_norm"] > 0
    with torch.no_grad():
        after = trainer.model.eval()(exported["ids"]).logits
    assert relative_difference(ours, after) > 1e-4


def test_gguf_format_calls_the_gguf_writer(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("model.gguf.export")
    fake.export_gguf = lambda checkpoint, out, quant: calls.append((checkpoint, out, quant)) or out
    monkeypatch.setitem(sys.modules, "model.gguf.export", fake)
    assert export_main([str(tmp_path / "ck"), str(tmp_path / "m.gguf"), "--format", "gguf", "--quant", "q4_0"]) == 0
    assert calls == [(tmp_path / "ck", tmp_path / "m.gguf", "q4_0")]


def test_gguf_format_without_its_module_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "model.gguf.export", None)  # as if gguf.py did not exist
    assert export_main([str(tmp_path / "ck"), str(tmp_path / "m.gguf"), "--format", "gguf"]) == 1
    assert "gguf" in capsys.readouterr().err


def test_cli_refuses_bad_requests(tmp_path, capsys):
    ckpt = write_run_checkpoint(tiny_model("alibi"), tmp_path / "run")
    with pytest.raises(SystemExit):
        export_main([str(ckpt), str(tmp_path / "x"), "--quant", "q8_0"])  # --quant is for gguf
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert export_main([str(ckpt), str(tmp_path / "full")]) == 2
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert export_main([str(ckpt), str(tmp_path / "s"), "--layout", "stablelm"]) == 1
    assert "position_embedding_type is 'alibi'" in capsys.readouterr().err


# --- the code copier on a project of its own -------------------------------------------------

SYNTHETIC = {
    "model/__init__.py": "from model.shapes import Square\n",
    "model/entry.py": (
        "from __future__ import annotations\n\n"
        "import math\n\n"
        "from model import helpers\n"
        "from model import Square  # re-exported by the package\n"
        "from model.shapes import (\n    area,\n    perimeter as edge,\n)\n"
        "import model.units as units\n\n\n"
        "def describe(side):\n"
        "    from common.fmt import fmt  # a lazy import is followed too\n\n"
        "    return fmt(area(side) + edge(side) + helpers.twice(side) + units.SCALE + math.floor(Square(side).side))\n"
    ),
    "model/helpers.py": "def twice(x):\n    return 2 * x\n",
    "model/shapes.py": (
        "from .units import SCALE\n\n\nclass Square:\n    def __init__(self, side):\n        self.side = side * SCALE\n\n\n"
        "def area(s):\n    return s * s\n\n\ndef perimeter(s):\n    return 4 * s\n"
    ),
    "model/units.py": "SCALE = 1\n",
    "model/unused.py": "raise RuntimeError('never copied')\n",
    "common/__init__.py": "",
    "common/fmt.py": "def fmt(x):\n    return f'<{x}>'\n",
}


def test_copier_follows_imports_and_makes_them_relative(tmp_path):
    from transformers.dynamic_module_utils import get_relative_import_files

    root = tmp_path / "src"
    for name, text in SYNTHETIC.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    out = tmp_path / "pkg" / "flat"
    out.mkdir(parents=True)
    written = copy_modules({"model.entry": "modeling_entry"}, out, root)
    assert sorted(written) == ["fmt.py", "helpers.py", "modeling_entry.py", "shapes.py", "units.py"]
    # transformers' remote-code loader copies exactly the files these relative imports name
    found = {Path(p).name for p in get_relative_import_files(str(out / "modeling_entry.py"))}
    assert found == {"fmt.py", "helpers.py", "shapes.py", "units.py"}
    (out / "__init__.py").write_text("")
    code = "import sys; sys.path.insert(0, sys.argv[1]); from flat.modeling_entry import describe; print(describe(3))"
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(tmp_path / "pkg")], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "<31>"  # area 9 + perimeter 12 + twice 6 + SCALE 1 + side 3


@pytest.mark.parametrize("line, reason", [("import model.helpers\n", "cannot be made relative"),
                                           ("from train.trainer import Trainer\n", "model/ may not use"),
                                           ("from model.missing import x\n", "not found")])
def test_copier_names_imports_it_cannot_copy(tmp_path, line, reason):
    root = tmp_path / "src"
    for name, text in SYNTHETIC.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "model" / "entry.py").write_text(line)
    with pytest.raises(RemoteCodeError, match=reason):
        copy_modules({"model.entry": "modeling_entry"}, tmp_path / "out", root)


def test_export_keeps_running_after_the_project_moves_code(tmp_path):
    """The renamed-module export above loads; here: its files follow the new name."""
    src = renamed_source(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    written = copy_modules(hub.ENTRY_MODULES, out, src)
    assert "position_bias.py" in written and "positions.py" not in written
    assert "from .position_bias import" in (out / "network.py").read_text()


def test_copier_refuses_an_import_cycle(tmp_path):
    root = tmp_path / "src"
    for name, text in SYNTHETIC.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "model" / "helpers.py").write_text("def twice(x):\n    from model.entry import describe  # lazy, still a cycle\n"
                                                "    return 2 * x\n")
    with pytest.raises(RemoteCodeError, match="import cycle model.entry -> model.helpers -> model.entry"):
        copy_modules({"model.entry": "modeling_entry"}, tmp_path / "out", root)
