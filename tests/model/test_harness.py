"""`make eval`: lm-evaluation-harness on a run checkpoint, offline, with the shipped holdout task."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from pipeline.tokenizer import load_tokenizer
from tests.helpers.hf_support import REPO, real_texts, tiny_model, write_gpt2_shards, write_run_checkpoint
from train.checkpoint import PROJECT_TOKENIZER
from train.harness import tokenizer_json
from train.holdout_task import HoldoutSection, build_items

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    return write_gpt2_shards(root, real_texts()[:12], 256, "validation")


def holdout(root, **overrides) -> HoldoutSection:
    fields = dict(data_root=str(root), seq_len=256, split="validation", context_tokens=32, continuation_tokens=8,
                  windows_per_document=2, max_items=40, choices=4, seed=0)
    return HoldoutSection(**{**fields, **overrides})


def test_holdout_items_are_deterministic_four_way_continuations(shards):
    decode = load_tokenizer().decode
    items = build_items(holdout(shards), decode)
    assert items == build_items(holdout(shards), decode)  # a pure function of shards and settings
    assert items != build_items(holdout(shards, seed=1), decode)
    assert 10 <= len(items) <= 40
    assert {len(item["choices"]) for item in items} == {4}
    assert len({item["label"] for item in items}) == 4  # the answer is not always in one place
    originals = real_texts()[:12]
    whole = [item["context"] + item["choices"][item["label"]] for item in items]
    clean = [w for w in whole if "\ufffd" not in w]  # a window cut inside a UTF-8 character decodes lossy
    assert len(clean) >= len(whole) * 0.8 and all(any(w in text for text in originals) for w in clean)
    for item in items:  # the wrong continuations are the same words in other orders
        assert len(set(item["choices"])) == 4
        assert len({tuple(sorted(choice.split())) for choice in item["choices"]}) == 1


def test_other_documents_distractors(shards):
    items = build_items(holdout(shards, distractors="other_documents"), load_tokenizer().decode)
    assert len(items) >= 20 and all(len(set(item["choices"])) == 4 for item in items)
    assert any(len({tuple(sorted(c.split())) for c in item["choices"]}) > 1 for item in items)
    with pytest.raises(ValueError, match="distractors must be one of"):
        build_items(holdout(shards, distractors="typos"), load_tokenizer().decode)


def test_too_few_documents_is_a_clear_error(shards):
    with pytest.raises(ValueError, match="documents with"):
        build_items(holdout(shards, context_tokens=5000), load_tokenizer().decode)


def test_a_bare_model_folder_falls_back_to_the_projects_tokenizer(tmp_path):
    assert tokenizer_json(tmp_path) == PROJECT_TOKENIZER


def project_loglikelihood(model, context: str, continuation: str) -> float:
    """log p(continuation | context) under the project model, split into tokens as lm-eval splits them:
    the context's trailing spaces go to the continuation, the whole text is encoded once."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    tok = load_tokenizer()
    whole, n_context = tok.encode(context + continuation).ids, len(tok.encode(context).ids)
    with torch.no_grad():
        logp = model(torch.tensor([whole])).logits.double().log_softmax(-1)[0]
    return float(sum(logp[i - 1, whole[i]] for i in range(n_context, len(whole))))


@pytest.mark.slow
def test_lm_eval_log_likelihoods_are_the_project_models(tmp_path, shards):
    """lm-eval's hf model, through the registered Auto classes, gives every holdout continuation the
    log-likelihood the project model gives it."""
    pytest.importorskip("transformers")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    import model.hf_transformers  # noqa: F401  (as train.harness does)

    ours = tiny_model("alibi")
    checkpoint = write_run_checkpoint(ours, tmp_path / "run", step=3)
    items = build_items(holdout(shards, max_items=5), load_tokenizer().decode)
    pairs = [(item["context"], choice) for item in items for choice in item["choices"]]
    lm = HFLM(pretrained=str(checkpoint), backend="causal", batch_size=4, dtype="float32", device="cpu")
    got = lm.loglikelihood([Instance("loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)])
    want = [project_loglikelihood(ours, *pair) for pair in pairs]
    assert len(got) == len(want) == 4 * len(items) >= 16
    for (ll, _), expected in zip(got, want):  # measured: at most 8e-6 apart on values near -90
        assert ll == pytest.approx(expected, rel=1e-6, abs=1e-4)
    assert len({round(ll, 3) for ll, _ in got}) > len(got) // 2  # distinct values: a real comparison


@pytest.mark.slow
def test_make_eval_scores_a_run_checkpoint_offline(tmp_path, shards):
    run_dir = tmp_path / "run"
    ours = tiny_model("alibi")
    write_run_checkpoint(ours, run_dir, step=7)
    custom = tmp_path / "my_tasks"  # a task folder of the user's own, next to the shipped task
    custom.mkdir()
    docs = [{"q": f"{a} plus {b} is", "choices": [f" {a + b}", f" {a + b + 1}"], "label": 0} for a, b in [(1, 2), (3, 4)]]
    (custom / "sums.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (custom / "sums.yaml").write_text(
        f"task: sums\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {custom / 'sums.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: choices\ndoc_to_target: label\n"
        "target_delimiter: ''\nmetric_list:\n  - metric: acc\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "train.harness", f"checkpoints={run_dir / 'checkpoints'}", f"tasks=[holdout_continuation,{custom}]",
         f"holdout.data_root={shards}", "holdout.seq_len=256", "holdout.context_tokens=32",
         "holdout.continuation_tokens=8", "limit=12", "batch_size=8"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run_dir / "eval" / "lm-eval-step-00000007.json").read_text())
    assert report["checkpoint"].endswith("step-00000007") and report["tasks"] == ["holdout_continuation", "sums"]
    for metric in ("acc", "acc_norm"):
        value = report["metrics"]["holdout_continuation"][metric]
        assert 0.0 <= value["value"] <= 1.0 and value["stderr"] > 0.0
    # The reported accuracies are the project model's own choices on the first 12 items.
    task_items = (run_dir / "eval" / "lm-eval-step-00000007" / "tasks" / "holdout_continuation.jsonl").read_text()
    items = [json.loads(line) for line in task_items.splitlines()][:12]
    acc = acc_norm = 0
    for item in items:
        lls = [project_loglikelihood(ours, item["context"], choice) for choice in item["choices"]]
        normed = [ll / len(choice) for ll, choice in zip(lls, item["choices"])]
        acc += max(range(4), key=lls.__getitem__) == item["label"]
        acc_norm += max(range(4), key=normed.__getitem__) == item["label"]
    assert report["metrics"]["holdout_continuation"]["acc"]["value"] == pytest.approx(acc / 12)
    assert report["metrics"]["holdout_continuation"]["acc_norm"]["value"] == pytest.approx(acc_norm / 12)
    assert report["n_samples"]["holdout_continuation"]["effective"] == 12
    assert report["n_samples"]["sums"]["effective"] == 2
    assert (run_dir / "eval" / "lm-eval-step-00000007" / "tasks" / "holdout_continuation.jsonl").is_file()
    assert "holdout_continuation" in proc.stdout and "acc_norm" in proc.stdout
