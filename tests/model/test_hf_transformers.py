"""transformers' Auto classes, generate() and pipeline() on run checkpoints, after one import.

The transformers side runs in a fresh process that only does ``import model.hf_transformers``
and then uses plain transformers API; every number it returns is checked against the
project's own model (logits, KV-cached generation, log-probabilities, token ids).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from model import BTLMLMHeadModel
from model.checkpoint.tokenizer import TOKENIZER_FILES
from model.generation import filter_logits
from pipeline.tokenizer import load_tokenizer
from tests.helpers.hf_support import REPO, TEXTS, relative_difference, run_fresh, tiny_model, write_run_checkpoint

pytest.importorskip("transformers")

PROMPT_LEN, NEW_TOKENS = 12, 32

FRESH_SCRIPT = """
import json, sys
import torch
from safetensors.torch import load_file, save_file
assert "transformers" not in sys.modules
import model.hf_transformers  # the one registering import
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, pipeline

spec = json.loads(sys.argv[1])
ids = load_file(spec["ids"])["ids"]
prompt = ids[:1, :spec["prompt_len"]]
out, tensors = {}, {}
for kind, folder in spec["folders"].items():
    m = AutoModelForCausalLM.from_pretrained(folder)
    r = out[kind] = {"class": type(m).__name__, "config_class": type(AutoConfig.from_pretrained(folder)).__name__,
                     "training": m.training}
    with torch.no_grad():
        tensors[kind] = m(ids).logits.contiguous()
    if kind == "published_auto_map":
        continue
    r["greedy"] = m.generate(prompt, max_new_tokens=spec["new_tokens"], do_sample=False)[0].tolist()
    r["top1_sample"] = m.generate(prompt, max_new_tokens=16, do_sample=True, top_k=1)[0].tolist()
    for key in ("sample", "sample_again"):  # the same seed twice: the same tokens
        torch.manual_seed(0)
        r[key] = m.generate(prompt, max_new_tokens=16, do_sample=True, temperature=0.9, top_p=0.9)[0].tolist()
    torch.manual_seed(1)
    r["sample_seed1"] = m.generate(prompt, max_new_tokens=16, do_sample=True, temperature=0.9, top_p=0.9)[0].tolist()
    beam = m.generate(prompt, max_new_tokens=12, num_beams=3, do_sample=False, length_penalty=0.0,
                      return_dict_in_generate=True, output_scores=True)
    r["beam"], r["beam_score"] = beam.sequences[0].tolist(), float(beam.sequences_scores[0])
    tok = AutoTokenizer.from_pretrained(folder)
    r["token_ids"] = [tok(text)["input_ids"] for text in spec["texts"]]
    r["special"] = [tok.bos_token_id, tok.eos_token_id]
    tok.pad_token, tok.padding_side = tok.eos_token, "left"
    texts = [spec["texts"][0][:60], spec["texts"][1][:12]]
    padded = m.generate(**tok(texts, return_tensors="pt", padding=True), max_new_tokens=6, do_sample=False)
    r["padded"] = padded[:, -6:].tolist()
    r["alone"] = [m.generate(**tok([t], return_tensors="pt"), max_new_tokens=6, do_sample=False)[0, -6:].tolist()
                  for t in texts]
    pipe = pipeline("text-generation", model=folder)
    r["pipeline"] = pipe(spec["texts"][0][:30], max_new_tokens=8, do_sample=False)[0]["generated_text"]
    r["groups"] = [[g["name"], g["lr"], g["weight_decay"], sum(p.numel() for p in g["params"])]
                   for g in m.get_mup_param_groups(lr=1e-3, weight_decay=0.1)]
save_file(tensors, spec["logits"])
print(json.dumps(out))
"""


def sequence_logprob(model: BTLMLMHeadModel, tokens: list[int], start: int) -> float:
    ids = torch.tensor([tokens])
    with torch.no_grad():
        logp = model(ids).logits.double().log_softmax(-1)[0]
    return float(sum(logp[i - 1, tokens[i]] for i in range(start, len(tokens))))


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf")
    models = {"alibi": tiny_model("alibi", seed=1), "rope": tiny_model("rope", seed=2)}
    folders = {kind: write_run_checkpoint(m, tmp / kind) for kind, m in models.items()}
    # The published config.json names remote code (auto_map); the registered class still wins.
    published = tmp / "published_auto_map"
    published.mkdir()
    for f in folders["alibi"].iterdir():
        if f.suffix in (".json", ".safetensors") and f.name != "config.json":
            (published / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((folders["alibi"] / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "cerebras/btlm-3b-8k-base--configuration_btlm.BTLMConfig",
                       "AutoModelForCausalLM": "cerebras/btlm-3b-8k-base--modeling_btlm.BTLMLMHeadModel"}
    (published / "config.json").write_text(json.dumps(cfg))
    folders["published_auto_map"] = published
    ids = torch.randint(0, 50257, (2, 40), generator=torch.Generator().manual_seed(3))
    save_file({"ids": ids}, str(tmp / "ids.safetensors"))
    spec = {"folders": {k: str(v) for k, v in folders.items()}, "ids": str(tmp / "ids.safetensors"),
            "logits": str(tmp / "logits.safetensors"), "texts": TEXTS, "prompt_len": PROMPT_LEN,
            "new_tokens": NEW_TOKENS}
    result = run_fresh(FRESH_SCRIPT, spec)
    models["published_auto_map"] = models["alibi"]
    return {"models": models, "folders": folders, "ids": ids, "result": result,
            "logits": load_file(str(tmp / "logits.safetensors"))}


def test_importing_the_model_package_does_not_import_transformers():
    code = "import sys, model, model.export; assert 'transformers' not in sys.modules, 'transformers imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_run_checkpoints_carry_tokenizer_and_generation_config(fresh_run):
    for kind in ("alibi", "rope"):
        folder = fresh_run["folders"][kind]
        assert all((folder / name).is_file() for name in TOKENIZER_FILES)
        gen = json.loads((folder / "generation_config.json").read_text())
        assert gen["bos_token_id"] == gen["eos_token_id"] == 50256


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["alibi", "rope", "published_auto_map"])
def test_auto_model_gives_the_projects_logits(fresh_run, kind):
    r = fresh_run["result"][kind]
    assert r["class"] == "BTLMForCausalLM" and r["config_class"] == "BTLMHFConfig" and not r["training"]
    with torch.no_grad():
        ours = fresh_run["models"][kind](fresh_run["ids"]).logits
    assert relative_difference(ours, fresh_run["logits"][kind]) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["alibi", "rope"])
def test_generate_matches_the_projects_kv_cached_generate(fresh_run, kind):
    model, r = fresh_run["models"][kind], fresh_run["result"][kind]
    prompt = fresh_run["ids"][:1, :PROMPT_LEN]
    ours = model.generate(prompt, NEW_TOKENS, temperature=0.0, eos_token_id=50256)[0].tolist()
    assert len(ours) == PROMPT_LEN + NEW_TOKENS
    assert r["greedy"] == ours  # greedy through transformers' DynamicCache, token for token
    assert r["top1_sample"] == ours[: PROMPT_LEN + 16]  # the sampling path, narrowed to one token
    assert len(r["sample"]) == PROMPT_LEN + 16 and r["sample"][:PROMPT_LEN] == prompt[0].tolist()
    # Sampling: reproducible under a seed, not greedy, and every token drawn from the project's own
    # temperature-0.9, top-p-0.9 set at its position.
    assert r["sample_again"] == r["sample"] and r["sample_seed1"] != r["sample"]
    assert r["sample"][PROMPT_LEN:] != ours[PROMPT_LEN : PROMPT_LEN + 16]
    sampled = torch.tensor([r["sample"]])
    with torch.no_grad():
        logits = model(sampled).logits[0, PROMPT_LEN - 1 : -1].double() / 0.9
    allowed = torch.isfinite(filter_logits(logits, None, 0.9))
    assert allowed[torch.arange(16), sampled[0, PROMPT_LEN:]].all()
    assert (allowed.sum(-1) > 1).any()  # the nucleus is wider than the greedy token: sampling had a choice
    # Beam search reorders the cache between steps; its score must be the sequence's true log-probability.
    assert r["beam_score"] == pytest.approx(sequence_logprob(model, r["beam"], PROMPT_LEN), abs=1e-3)
    assert sequence_logprob(model, r["beam"], PROMPT_LEN) >= sequence_logprob(model, ours[: PROMPT_LEN + 12], PROMPT_LEN) - 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["alibi", "rope"])
def test_left_padded_batches_generate_as_each_row_alone(fresh_run, kind):
    r = fresh_run["result"][kind]
    assert r["padded"] == r["alone"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["alibi", "rope"])
def test_auto_tokenizer_and_pipeline_use_the_projects_ids(fresh_run, kind):
    r = fresh_run["result"][kind]
    project = load_tokenizer()
    assert r["token_ids"] == [project.encode(text).ids for text in TEXTS]
    assert r["special"] == [50256, 50256]
    prompt = TEXTS[0][:30]
    ids = torch.tensor([project.encode(prompt).ids])
    greedy = fresh_run["models"][kind].generate(ids, 8, temperature=0.0, eos_token_id=50256)[0, ids.shape[1]:]
    assert r["pipeline"] == prompt + project.decode(greedy.tolist())


@pytest.mark.slow
def test_loaded_model_has_the_mup_param_groups(fresh_run):
    model = fresh_run["models"]["alibi"]
    ours = [[g["name"], g["lr"], g["weight_decay"], sum(p.numel() for p in g["params"])]
            for g in model.get_mup_param_groups(lr=1e-3, weight_decay=0.1)]
    assert fresh_run["result"]["alibi"]["groups"] == ours
    assert {g[0] for g in ours} == {"hidden", "embeddings", "no_decay"}
    hidden = next(g for g in ours if g[0] == "hidden")
    assert hidden[1] == pytest.approx(1e-3 * model.config.mup_width_scale)


def test_wrapper_shares_the_projects_parameters_and_saves_the_published_layout(tmp_path):
    from model.hf_transformers import BTLMForCausalLM, BTLMHFConfig

    core = tiny_model("alibi")
    wrapped = BTLMForCausalLM(BTLMHFConfig.from_project(core.config), core=core)
    assert dict(wrapped.named_parameters()).keys() == dict(core.named_parameters()).keys()
    assert all(a is b for a, b in zip(wrapped.parameters(), core.parameters()))
    wrapped.save_pretrained(tmp_path / "saved", max_shard_size="200KB")
    assert (tmp_path / "saved" / "model.safetensors.index.json").is_file()
    again = BTLMLMHeadModel.from_pretrained(tmp_path / "saved")
    ids = torch.randint(0, 50257, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, core(ids).logits)
    fresh = BTLMForCausalLM(BTLMHFConfig.from_project(core.config))  # built from a config: muP init, not transformers'
    std = fresh.transformer.h[0].attn.c_attn.weight.std().item()
    assert std == pytest.approx(0.073 * core.config.mup_width_scale**0.5 * 0.88, rel=0.15)
