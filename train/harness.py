"""`make eval`: score a checkpoint with lm-evaluation-harness, offline, on local tasks.

    python -m train.harness [--config configs/eval/harness.yaml] [checkpoint=DIR|URL] [tasks=[a,b]] [key=value ...]

The model goes through transformers' Auto classes (``import model.hf_transformers``
registers it) as lm-eval's ``hf`` model. Tasks are names of YAMLs in ``task_dir``
(the shipped ``holdout_continuation`` is built from the holdout shards first), lm-eval
task names, task YAML files or folders of them. Writes ``<out_dir>/lm-eval-<checkpoint>.json``
(metrics with standard errors, sample counts, settings) and prints a table. A checkpoint on
an object store (``s3://.../checkpoints/step-*``) is fetched once into ``cache_dir`` and
its report goes to the run's ``eval/`` there.

With ``decontamination=DIR`` (the output of ``make decontaminate``), every task that
report checked is scored a second time on its items no training document holds, and
both scores are reported side by side (train/clean_score.py). ``export_tasks=DIR``
writes the ready-to-read task folder (the holdout task's items built) and stops: the
evaluation sets ``make decontaminate`` checks the corpus against.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml
from tokenizers import Tokenizer

from common.config import shipped_path, stage_cli, to_dict
from common.storage import Location, cache_root, location, write_json, write_text
from model.checkpoint.folder import read_config
from model.checkpoint.tokenizer import TOKENIZER_NAME, file_sha256, has_tokenizer_files, write_tokenizer_files
from train.checkpoint import PROJECT_TOKENIZER, STATE_NAME, find_tokenizer, stored_checkpoints
from train.clean_score import compare, print_comparison, read_contaminated, selections, task_documents
from train.holdout_task import HoldoutSection, build_items, write_items
from train.run_store import fetch_tree

DEFAULT_CONFIG = "configs/eval/harness.yaml"
HOLDOUT_TASK = "holdout_continuation"


@dataclass
class HarnessConfig:
    checkpoint: Optional[str]  # a model folder (path or URL); null = newest complete checkpoint in `checkpoints`
    checkpoints: str
    out_dir: Optional[str]  # a path or URL
    tasks: list[str]
    task_dir: str
    batch_size: int
    limit: Optional[int]
    num_fewshot: Optional[int]
    device: str
    dtype: str
    num_threads: Optional[int]
    seed: int
    bootstrap_iters: int
    holdout: HoldoutSection
    decontamination: Optional[str]  # a decontamination output (or its report.json): also score clean items
    export_tasks: Optional[str]  # write the task folder here and stop (no checkpoint needed)
    cache_dir: Optional[str] = None  # where a checkpoint on an object store is fetched; null = $BTLM_CACHE_DIR or <temp>/btlm-cache

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("tasks must name at least one task")


class HarnessError(RuntimeError):
    """The evaluation cannot start; the message says what is missing."""


def resolve_checkpoint(cfg: HarnessConfig) -> tuple[Location, Path]:
    """The checkpoint as named (path or URL) and a local folder holding it."""
    if cfg.checkpoint:
        named = location(cfg.checkpoint)
        if not (named / "config.json").is_file():
            raise HarnessError(f"checkpoint {named} has no config.json")
    else:
        found = stored_checkpoints(location(cfg.checkpoints))
        if not found:
            raise HarnessError(f"no complete checkpoint in {cfg.checkpoints}: run `make pretrain` or pass CKPT=DIR")
        named = found[-1]
    return named, fetch_tree(named, cache_root(cfg.cache_dir) / "models")


def resolve_out_dir(cfg: HarnessConfig, checkpoint: Location) -> Location:
    if cfg.out_dir:
        return location(cfg.out_dir)
    if checkpoint.parent.name == "checkpoints":  # runs/<name>/checkpoints/step-*: the run's eval folder
        return checkpoint.parent.parent / "eval"
    return location("runs") / "eval" / checkpoint.name


def tokenizer_json(checkpoint: Path) -> Path:
    """The tokenizer the model was trained with: its own copy, the one its run names, or the project's."""
    if (checkpoint / TOKENIZER_NAME).is_file():
        return checkpoint / TOKENIZER_NAME
    if (checkpoint / STATE_NAME).is_file():
        found, _ = find_tokenizer(json.loads((checkpoint / STATE_NAME).read_text(encoding="utf-8")))
        if found is not None:
            return found
    return PROJECT_TOKENIZER


def task_name(path: Path) -> str:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return data.get("task") or path.stem


def prepare_tasks(cfg: HarnessConfig, work: Path, tokenizer: Path) -> tuple[list[str], list[Path], bool]:
    """(task names, folders for lm-eval to index, whether lm-eval's own tasks are needed)."""
    names, include, defaults = [], [], False
    for task in cfg.tasks:
        path, shipped = Path(task), shipped_path(cfg.task_dir) / f"{task}.yaml"
        if path.is_dir():
            include.append(path.resolve())
            names += [task_name(p) for p in sorted(path.glob("*.yaml"))]
        elif path.suffix in (".yaml", ".yml") and path.is_file():
            include.append(path.parent.resolve())
            names.append(task_name(path))
        elif shipped.is_file():
            names.append(task_name(shipped))
            include.append(localize_task(cfg, shipped, work / "tasks", tokenizer))
        else:
            names.append(task)  # one of lm-eval's own tasks
            defaults = True
    return names, sorted(set(include)), defaults


def localize_task(cfg: HarnessConfig, yaml_path: Path, out: Path, tokenizer: Path) -> Path:
    """A copy of a shipped task YAML whose data files are absolute (built first for the holdout task)."""
    data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    files = (data.get("dataset_kwargs") or {}).get("data_files") or {}
    for split, name in files.items():
        target = (yaml_path.parent / name).resolve()
        if data.get("task") == HOLDOUT_TASK:
            target = (out / Path(name).name).resolve()
            decode = Tokenizer.from_file(str(tokenizer)).decode
            items = build_items(cfg.holdout, decode, tokenizer_sha256=file_sha256(tokenizer))
            write_items(items, target)
        elif not target.is_file():
            raise HarnessError(f"{yaml_path}: data file {target} (split {split}) does not exist")
        files[split] = str(target)
    write_text(out / yaml_path.name, yaml.safe_dump(data, sort_keys=False))
    return out.resolve()


def summarize(results: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """{task: {metric: {"value", "stderr"}}} from lm-eval's ``results``."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            metric, comma, _filter = key.partition(",")
            if not comma or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{_filter}")
            out.setdefault(task, {})[metric] = {
                "value": float(value), "stderr": float(stderr) if isinstance(stderr, (int, float)) else None}
    return out


def export_tasks(cfg: HarnessConfig) -> Path:
    """The tasks of ``cfg.tasks`` that are shipped YAMLs, ready to read, in ``cfg.export_tasks``."""
    out = Path(cfg.export_tasks)
    tokenizer = tokenizer_json(resolve_checkpoint(cfg)[1]) if cfg.checkpoint else PROJECT_TOKENIZER
    for task in cfg.tasks:
        shipped = Path(cfg.task_dir) / f"{task}.yaml"
        if not shipped.is_file():
            raise HarnessError(f"export_tasks: {task} is not a task of {cfg.task_dir}")
        localize_task(cfg, shipped, out, tokenizer)
    return out


def run(cfg: HarnessConfig) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    contaminated = read_contaminated(cfg.decontamination) if cfg.decontamination else None
    named, checkpoint = resolve_checkpoint(cfg)
    published = resolve_out_dir(cfg, named)
    # lm-eval writes files of its own: a report on an object store is made locally, then sent
    out_dir = Path(published.path) if published.is_local else cache_root(cfg.cache_dir) / "eval" / published.path
    work = out_dir / f"lm-eval-{checkpoint.name}"
    tokenizer = tokenizer_json(checkpoint)
    model_args: dict[str, Any] = {"pretrained": str(checkpoint), "dtype": cfg.dtype, "backend": "causal"}
    if not has_tokenizer_files(checkpoint):  # an older checkpoint: give lm-eval the tokenizer files beside it
        write_tokenizer_files(work / "tokenizer", tokenizer, read_config(checkpoint))
        model_args["tokenizer"] = str(work / "tokenizer")
    names, include, defaults = prepare_tasks(cfg, work, tokenizer)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager

        import model.hf_transformers  # noqa: F401  (registers model_type btlm with the Auto classes)
    except ModuleNotFoundError as exc:
        raise HarnessError(f"{exc.name} is not installed: pip install -e '.[eval]'") from None

    start = time.perf_counter()
    manager = TaskManager(include_path=[str(p) for p in include] or None, include_defaults=defaults)
    chosen = selections(contaminated, task_documents(names, manager), cfg.limit) if contaminated is not None else {}

    def evaluate(tasks: list[str], samples: dict[str, list[int]] | None) -> dict[str, Any]:
        return lm_eval.simple_evaluate(
            model="hf", model_args=model_args, tasks=tasks, num_fewshot=cfg.num_fewshot, batch_size=cfg.batch_size,
            device=cfg.device, limit=None if samples else cfg.limit, samples=samples,
            bootstrap_iters=cfg.bootstrap_iters, log_samples=False, task_manager=manager, random_seed=cfg.seed,
            numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed)

    # with a report, the full score is over the same items (``samples``) the clean one is a subset of
    results = evaluate(names, {t: s["full"] for t, s in chosen.items()} or None)
    dirty = [t for t, s in chosen.items() if len(s["clean"]) < len(s["full"])]
    clean = evaluate(dirty, {t: chosen[t]["clean"] for t in dirty}) if dirty else {}
    elapsed = time.perf_counter() - start
    report = {
        "checkpoint": str(named), "tasks": names, "metrics": summarize(results),
        "n_samples": results.get("n-samples", {}), "elapsed_s": elapsed,
        "lm_eval_version": getattr(lm_eval, "__version__", None), "settings": to_dict(cfg),
        "results": results.get("results", {}), "versions": results.get("versions", {}),
    }
    if contaminated is not None:
        report["clean"] = compare(report["metrics"], summarize(clean) if clean else {}, chosen)
    report = json.loads(json.dumps(report, default=str))
    path = write_json(out_dir / f"lm-eval-{checkpoint.name}.json", report)
    if not published.is_local:
        (published / path.name).upload_from(path)
    report["path"] = str(published / path.name)
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"\n{'task':<28} {'metric':<10} {'value':>8} {'stderr':>8} {'n':>6}")
    for task, metrics in report["metrics"].items():
        n = (report["n_samples"].get(task) or {}).get("effective", "")
        for metric, v in metrics.items():
            stderr = "" if v["stderr"] is None else f"{v['stderr']:.4f}"
            print(f"{task:<28} {metric:<10} {v['value']:>8.4f} {stderr:>8} {n!s:>6}")
    if "clean" in report:
        print_comparison(report["clean"])
    print(f"\n{report['checkpoint']}: {report['elapsed_s']:.1f} s; results in {report['path']}")


def main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = stage_cli(HarnessConfig, __doc__.splitlines()[0].strip("`"), DEFAULT_CONFIG, argv, prog="train.harness")
    try:
        if cfg.export_tasks:
            print(f"tasks written to {export_tasks(cfg)}")
            return 0
        report = run(cfg)
    except (HarnessError, ValueError) as exc:
        print(f"train.harness: error: {exc}", file=sys.stderr)
        return 1
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
