"""Checkpoints without pickle: the model in the Hugging Face layout (via the model package),
optimizer tensors in safetensors, everything else in JSON.

Layout of ``checkpoints/step-00000123/``::

    config.json, model.safetensors   the model (BTLMLMHeadModel.from_pretrained loads it)
    generation_config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json
                                     so transformers' Auto classes and pipeline open the folder
    optimizer.safetensors            AdamW moments and step counts, keyed state.<parameter name>.<moment>
    rng-rank<r>.safetensors          torch RNG states of each rank
    trainer_state.json               step, tokens, data positions, schedule, optimizer
                                     hyper-parameters, python/numpy RNG, resolved config

A checkpoint is written into a hidden temporary folder and renamed when complete, so
``step-*`` folders are always whole; ``trainer_state.json`` is written last. On an object
store (a ``run_dir`` URL) there is no rename: each file is uploaded whole into
``step-*/`` and ``trainer_state.json`` last, so only a checkpoint with that file counts as
complete; a pruned or replaced one loses that file first.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from common.atomic import TMP_SUFFIX
from common.storage import Location
from model.checkpoint.tokenizer import TokenizerMismatch, file_sha256, write_tokenizer_files
from train.run_store import shards_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
# The tokenizer `make tokenize` uses by default; a run's shards name theirs by SHA-256.
PROJECT_TOKENIZER = REPO_ROOT / "pipeline" / "assets" / "tokenizer.json"
STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def complete_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_NAME).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = complete_checkpoints(folder)
    return found[-1] if found else None


def stored_checkpoints(folder: Location) -> list[Location]:
    """Complete checkpoints in a folder of any store (those with ``trainer_state.json``), oldest first."""
    if folder.is_local:
        return [Location(None, str(p)) for p in complete_checkpoints(folder.path)]
    found = []
    for file in folder.list_files(recursive=True, suffixes=[STATE_NAME]):
        parts = file.relative_to(folder).split("/")
        match = _STEP_DIR.match(parts[0])
        if len(parts) == 2 and parts[1] == STATE_NAME and match:
            found.append((int(match.group(1)), folder / parts[0]))
    return [loc for _, loc in sorted(found, key=lambda item: item[0])]


def remove_stored(checkpoint: Location) -> None:
    """Remove a checkpoint from an object store: its completion mark first."""
    (checkpoint / STATE_NAME).remove()
    checkpoint.remove_tree()


def find_tokenizer(state: dict[str, Any]) -> tuple[Path | None, str]:
    """The tokenizer.json the run's shards were made with, and why when none is found.

    Candidates: the one `make tokenize` leaves beside the shards (``data.root``, or its copy
    in the cache when the shards are on an object store), the run's
    sample tokenizer (``sample.tokenizer``) and the project's; the first whose SHA-256
    equals the shards' ``tokenizer_sha256`` wins (any, when the shards name none).
    """
    want = state.get("tokenizer_sha256")
    config = state.get("config") or {}
    configured = (config.get("sample") or {}).get("tokenizer")
    root = (config.get("data") or {}).get("root")
    candidates = [shards_tokenizer(root, config.get("cache_dir"))] if root else []
    if configured:
        path = Path(configured)
        candidates += [path] if path.is_absolute() else [path, REPO_ROOT / path]
    candidates.append(PROJECT_TOKENIZER)
    for path in candidates:
        if path.is_file() and (want is None or file_sha256(path) == want):
            return path, ""
    return None, f"no tokenizer.json with SHA-256 {want} (the shards' tokenizer) among {[str(p) for p in candidates]}"


def _param_names(optimizer: torch.optim.Optimizer, model) -> list[str]:
    """Parameter names in the optimizer's index order (state dict keys are indices)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_tensors(optimizer: torch.optim.Optimizer, model) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Optimizer state as tensors named ``state.<parameter name>.<moment>`` plus JSON-able groups."""
    state = optimizer.state_dict()
    names = _param_names(optimizer, model)
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state.{names[index]}.{key}"] = tensor.detach().cpu().contiguous()
    groups = []
    for group in state["param_groups"]:
        plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
        plain["params"] = [names[i] for i in group["params"]]
        groups.append(plain)
    return tensors, groups


def read_optimizer(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / OPTIMIZER_NAME))


def load_optimizer(optimizer: torch.optim.Optimizer, model, folder: Path, groups: list[dict[str, Any]]) -> None:
    index = {name: i for i, name in enumerate(_param_names(optimizer, model))}
    current = optimizer.state_dict()["param_groups"]
    saved_names = [g["params"] for g in groups]
    if [[index.get(n) for n in names] for names in saved_names] != [g["params"] for g in current]:
        raise ValueError(f"{folder}: optimizer parameter groups do not match the model (different model config?)")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(folder / OPTIMIZER_NAME)).items():
        name, moment = key[len("state."):].rsplit(".", 1)
        state.setdefault(index[name], {})[moment] = tensor
    restored = []
    for group, now in zip(groups, current):
        restored.append({**group, "params": now["params"], **({"betas": tuple(group["betas"])} if "betas" in group else {})})
    optimizer.load_state_dict({"state": state, "param_groups": restored})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    plain = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, plain


def restore_rng(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    py = plain["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = plain["numpy"]
    np.random.set_state((npy[0], np.array(npy[1], dtype=np.uint32), npy[2], npy[3], npy[4]))


class CheckpointWriter:
    """Writes complete checkpoints and keeps the newest ``keep_last``; rank-aware."""

    def __init__(self, folder: str | Path, keep_last: int, rank: int, world_size: int, barrier,
                 remote: Location | None = None):
        self.folder = Path(folder)  # local (a remote run's working copy when ``remote`` is set)
        self.remote = remote
        self.keep_last = keep_last
        self.rank = rank
        self.world_size = world_size
        self.barrier = barrier
        self._warned = False

    def save(self, step: int, model, optimizer_state, state: dict[str, Any]) -> Path:
        """``model`` (a full model) and ``optimizer_state`` (tensors, groups) are used on rank 0 only."""
        final = self.folder / step_dir_name(step)
        # Every rank writes into this folder, so its name is shared (not common.atomic's per-process one).
        tmp = self.folder / f".{step_dir_name(step)}{TMP_SUFFIX}"
        stored = self.remote / step_dir_name(step) if self.remote is not None else None
        if self.rank == 0:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            if stored is not None:
                remove_stored(stored)  # a replaced checkpoint is incomplete before any new file lands
        self.barrier()
        tmp.mkdir(parents=True, exist_ok=True)  # ranks on other nodes have their own working copy
        tensors, plain_rng = rng_state()
        mine = [f"rng-rank{self.rank}.safetensors", f"rng-rank{self.rank}.json"]
        save_file(tensors, str(tmp / mine[0]))
        (tmp / mine[1]).write_text(json.dumps(plain_rng), encoding="utf-8")
        if stored is not None:
            for name in mine:
                (stored / name).upload_from(tmp / name)
        self.barrier()
        if self.rank == 0:
            model.save_pretrained(str(tmp))
            self._write_tokenizer(tmp, model.config, state)
            opt_tensors, groups = optimizer_state
            save_file(opt_tensors, str(tmp / OPTIMIZER_NAME))
            payload = {**state, "optimizer_groups": groups, "world_size": self.world_size}
            (tmp / STATE_NAME).write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
            if stored is not None:
                self._upload(tmp, stored)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune()
        self.barrier()
        if stored is not None and self.rank:  # a rank on another node: its RNG files are on the store
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    @staticmethod
    def _upload(tmp: Path, stored: Location) -> None:
        """Every file of rank 0 (the ranks sent their RNG files), ``trainer_state.json`` last."""
        names = sorted(p.name for p in tmp.iterdir() if p.is_file() and not p.name.startswith("rng-rank"))
        names.remove(STATE_NAME)
        for name in [*names, STATE_NAME]:
            (stored / name).upload_from(tmp / name)

    def _write_tokenizer(self, folder: Path, model_config, state: dict[str, Any]) -> None:
        """Tokenizer files beside the model; a checkpoint without them is still complete."""
        tokenizer, why = find_tokenizer(state)
        try:
            if tokenizer is None:
                raise TokenizerMismatch(why)
            write_tokenizer_files(folder, tokenizer, model_config)
        except TokenizerMismatch as exc:
            if not self._warned:
                print(f"checkpoint: no tokenizer files written: {exc}", file=sys.stderr)
                self._warned = True

    def _prune(self) -> None:
        for old in complete_checkpoints(self.folder)[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        if self.remote is not None:
            for stored in stored_checkpoints(self.remote)[: -self.keep_last]:
                remove_stored(stored)


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))


def load_rng(folder: Path, rank: int) -> None:
    """Restore this rank's RNG; a run resumed on a different world size reuses rank 0's."""
    name = f"rng-rank{rank}" if (folder / f"rng-rank{rank}.safetensors").exists() else "rng-rank0"
    tensors = load_file(str(folder / f"{name}.safetensors"))
    plain = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    restore_rng(tensors, plain)
