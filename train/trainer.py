"""The training loop: phases of packed sequences, AdamW over muP groups, accumulation,
evaluation, checkpoints and failure handling. Parallelism, data, checkpoints and
metrics live in their own modules; this one only wires them together."""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import to_dict
from common.storage import write_json
from model import BTLMConfig, BTLMLMHeadModel
from model.hardware import cpu_has_bf16_matmul, cuda_peak_flops, flush_denormals, measured_matmul_flops
from train import checkpoint as ckpt
from train import parallel
from train.config import TrainConfig
from train.data import PhaseStream, TrainBatches, open_shard_sets
from train.distributed import DistEnv, barrier, mean_across
from train.evaluate import validation_losses
from train.lr import LRSchedule
from train.metrics import MetricsLog
from train.phases import phase_at, plan_phases
from train.run_store import RunStore, fetch_tree, local_model, local_token_root
from train.step import optimizer_step


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def build_model(config: TrainConfig, source: Path | None):
    if source is not None:
        return BTLMLMHeadModel.from_pretrained(str(source))
    model_config = BTLMConfig.from_yaml(config.model.config, overrides=config.model.overrides or None)
    return BTLMLMHeadModel(model_config)


def peak_flops(config: TrainConfig, device: torch.device, precision: str) -> float | None:
    """FLOP/s that MFU is measured against: the configured peak, a table of GPUs, or on a
    CPU the matmul throughput measured here in the run's precision."""
    if config.log.peak_tflops:
        return config.log.peak_tflops * 1e12
    if device.type == "cuda":
        return cuda_peak_flops(device)
    return measured_matmul_flops(precision)


class Trainer:
    def __init__(self, config: TrainConfig, run_dir: str | Path, env: DistEnv):
        self.config = config
        self.env = env
        self.store = RunStore(run_dir, config.cache_dir)
        self.run_dir = self.store.local  # written here; a remote run_dir gets copies (publish)
        self.ckpt_dir = self.run_dir / "checkpoints"
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        flush_denormals()  # ALiBi's underflowing exp() is several times slower otherwise on CPU
        self.plans = plan_phases(config.phases, config.tokens_per_batch, config.total_tokens)
        self.total_steps = sum(p.steps for p in self.plans)

        self.resumed_from = None
        resume_from = self._find_resume() if config.resume == "auto" else None
        source = resume_from or (local_model(config.init_from, config.cache_dir) if config.init_from else None)
        seed_everything(config.seed)
        self.model = build_model(config, source).to(env.device)
        self.model_config = self.model.config
        self.precision = self._precision()
        self.fsdp = env.enabled and config.parallel == "fsdp"
        if self.fsdp:
            parallel.shard_fsdp(self.model)

        seq_lens = sorted({p.seq_len for p in config.phases})
        splits = [config.data.train_split, config.data.validation_split]
        token_root = local_token_root(config.data.root, seq_lens, splits, config.cache_dir, config.cache_max_gb)
        self.shards = open_shard_sets(
            token_root, seq_lens, splits,
            eos_id=self.model_config.eos_token_id, vocab_size=self.model_config.vocab_size,
            tokenizer_sha256=config.data.tokenizer_sha256,
        )
        self.tokenizer_sha256 = next(iter(self.shards.values())).metadata.get("tokenizer_sha256")
        self.batches = []
        for plan in self.plans:
            shards = self.shards[(plan.seq_len, config.data.train_split)]
            stream = PhaseStream(len(shards), config.seed, plan.index)
            self.batches.append(TrainBatches(
                shards, stream, plan.rows_per_step, self.micro_rows(plan.seq_len),
                env.rank, env.world_size, config.data.reset_attention_at_documents,
            ))

        groups = self.model.get_mup_param_groups(config.lr, config.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                                           weight_decay=config.weight_decay)
        self.schedule = LRSchedule.from_config(config)
        self.step = 0
        self.positions = [0] * len(self.plans)
        self.bad_in_row = 0
        self.skipped = 0
        if resume_from is not None:
            self._restore(resume_from)
        self.wrapped = self._wrap(self.model)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", env.is_main,
                                  self.run_dir / "tensorboard" if config.log.tensorboard else None)
        if resume_from is not None:
            self.metrics.truncate_after(self.step)
        remote_ckpts = self.store.remote / "checkpoints" if self.store.remote is not None else None
        self.writer = ckpt.CheckpointWriter(self.ckpt_dir, config.keep_last, env.rank, env.world_size,
                                            lambda: barrier(env), remote=remote_ckpts)
        self.peak_flops = peak_flops(config, env.device, self.precision)
        self.peak_measured = env.device.type == "cpu" and not config.log.peak_tflops

    # --- set-up -----------------------------------------------------------------

    def _find_resume(self) -> Path | None:
        """The newest complete checkpoint as a local folder; ``resumed_from`` names it as the user
        knows it. A remote run's metrics so far replace the working copy's."""
        if self.store.remote is None:
            self.resumed_from = ckpt.latest_checkpoint(self.ckpt_dir)
            return self.resumed_from
        if self.env.is_main:
            self.store.pull("metrics.jsonl")
        stored = ckpt.stored_checkpoints(self.store.remote / "checkpoints")
        if not stored:
            return None
        self.resumed_from = stored[-1]
        return fetch_tree(stored[-1], self.store.cache / "runs")

    def micro_rows(self, seq_len: int) -> int:
        return max(self.config.micro_batch_tokens // seq_len, 1)

    def _precision(self) -> str:
        if self.config.precision == "auto":
            return "bf16" if self.env.device.type == "cuda" or cpu_has_bf16_matmul() else "fp32"
        return self.config.precision

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.env.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _wrap(self, model):
        if self.env.enabled and self.config.parallel == "ddp":
            model = parallel.wrap_ddp(model, self.env)
        if self.config.compile:
            model = torch.compile(model)
        return model

    def _restore(self, folder: Path) -> None:
        state = ckpt.read_state(folder)
        if state.get("tokenizer_sha256") and self.tokenizer_sha256 and state["tokenizer_sha256"] != self.tokenizer_sha256:
            raise ValueError(
                f"checkpoint {folder} was trained on tokenizer {state['tokenizer_sha256']}, "
                f"the shards in {self.config.data.root} use {self.tokenizer_sha256}"
            )
        if [p["seq_len"] for p in state["phases"]] != [p.seq_len for p in self.plans]:
            raise ValueError(f"checkpoint {folder} has phases {state['phases']}, the config {self.config.phases}")
        if self.fsdp:
            parallel.load_fsdp_optimizer(self.model, self.optimizer, ckpt.read_optimizer(folder),
                                         state["optimizer_groups"])
        else:
            ckpt.load_optimizer(self.optimizer, self.model, folder, state["optimizer_groups"])
        ckpt.load_rng(folder, self.env.rank)
        self.step = state["step"]
        self.positions = state["positions"]
        self.bad_in_row = state["bad_steps_in_row"]
        self.skipped = state["skipped_steps"]

    # --- one optimizer step ----------------------------------------------------------

    def train_step(self) -> dict[str, Any]:
        plan = phase_at(self.plans, self.step)
        position = self.positions[plan.index]
        t0 = time.perf_counter()
        micro = self.batches[plan.index].step(position)
        data_s = time.perf_counter() - t0
        lr = self.schedule.apply(self.optimizer, self.step)
        no_sync = (lambda: parallel.no_sync(self.wrapped, self.model, self.fsdp)) if self.env.enabled else None
        result = optimizer_step(self.model, self.optimizer, micro, self.config.clip, wrapped=self.wrapped,
                                device=self.env.device, autocast=self.autocast, no_sync=no_sync,
                                reduce_loss=lambda loss: mean_across(self.env, loss))
        loss_value, grad_norm, finite = result.loss, result.grad_norm, result.finite
        if finite:
            self.bad_in_row = 0
        else:
            self.bad_in_row += 1
            self.skipped += 1
        if self.env.device.type == "cuda":
            torch.cuda.synchronize()
        step_s = time.perf_counter() - t0
        record = {
            "kind": "train", "step": self.step + 1, "tokens": (self.step + 1) * self.config.tokens_per_batch,
            "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "phase": plan.index, "seq_len": plan.seq_len,
            "tokens_per_s": self.config.tokens_per_batch / step_s, "step_s": step_s, "data_s": data_s,
            "skipped": not finite,
        }
        if self.peak_flops:
            flops = self.model.flops_per_token(plan.seq_len) * record["tokens_per_s"] / self.env.world_size
            record["mfu"] = flops / self.peak_flops
        if not finite and self.bad_in_row >= self.config.max_bad_steps:
            raise NonFiniteError(
                f"{self.bad_in_row} consecutive non-finite steps (loss {loss_value}, grad norm {grad_norm}); "
                f"last at step {self.step + 1}, phase {plan.index} (seq_len {plan.seq_len}), "
                f"data position {position} of {self.config.data.root}/seq{plan.seq_len}/{self.config.data.train_split}"
            )
        self.positions[plan.index] = position + plan.rows_per_step
        self.step += 1
        return record

    # --- evaluation and checkpoints ---------------------------------------------

    def evaluate(self) -> dict[str, Any]:
        """Validation loss at every phase length on the same validation text (the longest phase's rows)."""
        c = self.config
        seq_lens = sorted({p.seq_len for p in c.phases})
        shards = self.shards[(seq_lens[-1], c.data.validation_split)]
        out = validation_losses(self.model, shards, seq_lens, c.eval.tokens, c.micro_batch_tokens, self.env,
                                self.autocast, c.data.reset_attention_at_documents, c.eval.long_context_buckets)
        result = {"kind": "eval", "step": self.step, "tokens": self.step * c.tokens_per_batch,
                  "val_loss": out["loss"], "val_perplexity": out["perplexity"],
                  "val_text": {"spans": out["spans"], "span_len": out["span_len"], "targets": out["targets"]}}
        if self.peak_measured:  # keep the best matmul rate seen, so MFU is not inflated by a busy start
            self.peak_flops = max(self.peak_flops, measured_matmul_flops(self.precision))
        self.metrics.write(result)
        result["loss_by_position"] = out["by_position"]  # in the eval JSON, not in every metrics line
        if "late" in out:
            result["val_loss_late"] = out["late"]
        if self.env.is_main:
            write_json(self.run_dir / "eval" / f"val-{ckpt.step_dir_name(self.step)}.json", result)
        return result

    def save(self) -> Path:
        state = {
            "step": self.step, "tokens": self.step * self.config.tokens_per_batch,
            "positions": self.positions, "bad_steps_in_row": self.bad_in_row, "skipped_steps": self.skipped,
            "phases": [{"index": p.index, "seq_len": p.seq_len, "first_step": p.first_step, "steps": p.steps,
                        "rows_per_step": p.rows_per_step} for p in self.plans],
            "lr_multiplier": self.schedule.multiplier(self.step - 1),  # of the last step taken
            "tokenizer_sha256": self.tokenizer_sha256, "config": to_dict(self.config),
        }
        if self.env.is_main:  # before the checkpoint, so the store's metrics reach it (a resume drops the rest)
            self.store.publish("metrics.jsonl", "eval")
        model = self.export_model()
        optimizer_state = parallel.full_optimizer_state(self.model, self.optimizer, self.fsdp)
        return self.writer.save(self.step, model, optimizer_state, state)

    def export_model(self):
        """The full model on rank 0 (gathered from the shards under FSDP; a collective)."""
        if not self.fsdp:
            return self.model
        state = parallel.full_model_state(self.model, True)
        if not self.env.is_main:
            return None
        full = type(self.model)(self.model_config, init=False)
        missing, unexpected = full.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if k != "lm_head.weight"]:
            raise RuntimeError(f"gathered FSDP state does not fit the model: missing {missing}, unexpected {unexpected}")
        return full.eval()

    # --- the loop ---------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        c = self.config
        last_step = self.total_steps if c.max_steps is None else min(self.total_steps, c.max_steps)
        progress = None
        if self.env.is_main and c.log.progress:
            from tqdm import tqdm

            progress = tqdm(total=last_step, initial=self.step, desc="pretrain", unit="step", dynamic_ncols=True)
        last_eval = None
        try:
            while self.step < last_step:
                record = self.train_step()
                if self.step % max(c.log.every, 1) == 0 or self.step == last_step:
                    self.metrics.write(record)
                if progress is not None:
                    postfix = {"loss": f"{record['loss']:.3f}", "lr": f"{record['lr']:.2e}",
                               "tok/s": f"{record['tokens_per_s']:.0f}", "seq": record["seq_len"]}
                    if "mfu" in record:
                        postfix["mfu"] = f"{100 * record['mfu']:.1f}%"
                    progress.set_postfix(postfix)
                    progress.update(1)
                if c.eval.every and self.step % c.eval.every == 0 and self.step < last_step:
                    last_eval = self.evaluate()
                if c.checkpoint_every and self.step % c.checkpoint_every == 0 and self.step < last_step:
                    self.save()
        finally:
            if progress is not None:
                progress.close()
        if last_eval is None or last_eval["step"] != self.step:
            last_eval = self.evaluate()
        path = self.save()
        return {"step": self.step, "checkpoint": self.store.url(f"checkpoints/{path.name}"), "eval": last_eval,
                "skipped_steps": self.skipped}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
