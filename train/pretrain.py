"""`make pretrain`: train a muP BTLM on packed token shards, phase by phase.

    python -m train.pretrain --config configs/train/demo.yaml [key=value ...]
    torchrun --nproc_per_node=2 -m train.pretrain --config ... (DDP; gloo on CPU, NCCL on GPU)

Writes into run_dir (default runs/<config name>/): metrics.jsonl, checkpoints/step-*/,
eval/*.json, plots/*.png and a sample generation.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

import torch

from common.config import shipped_path, stage_cli, to_json
from common.storage import write_json
from train.config import TrainConfig, resolve_run_dir
from train.data import ShardError
from train.distributed import DistEnv, init_distributed, shutdown
from train.evaluate import loss_by_position
from train.metrics import read_metrics
from train.plots import plot_loss_by_position, plot_loss_curve, plot_validation_by_position
from train.trainer import NonFiniteError, Trainer

DEFAULT_CONFIG = "configs/train/demo.yaml"


def long_context_eval(trainer: Trainer, model) -> dict[str, Any] | None:
    """BTLM's loss-by-position figure on validation text longer than any training length."""
    c = trainer.config
    longest = max(p.seq_len for p in c.phases)
    shards = trainer.shards[(longest, c.data.validation_split)]
    try:
        result = loss_by_position(model, shards, c.eval.long_context_len, c.eval.long_context_sequences,
                                  c.eval.long_context_buckets, c.eval.long_context_chunk, trainer.env.device,
                                  trainer.autocast)
    except ValueError as exc:
        print(f"long-context evaluation skipped: {exc}", file=sys.stderr)
        return None
    result["train_seq_lens"] = sorted({p.seq_len for p in c.phases})
    result["step"] = trainer.step
    write_json(trainer.run_dir / "eval" / "loss_by_position.json", result)
    plot_loss_by_position(result, trainer.run_dir / "plots" / "loss_by_position.png")
    return result


def sample_generation(trainer: Trainer, model) -> dict[str, Any] | None:
    s = trainer.config.sample
    if not s.tokenizer:  # the config asks for no sample
        return None
    path = shipped_path(s.tokenizer)  # the default pipeline/assets/... is found from any directory
    if not path.exists():
        print(f"sample generation skipped: tokenizer {s.tokenizer!r} not found", file=sys.stderr)
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    prompt_ids = tokenizer.encode(s.prompt).ids
    torch.manual_seed(trainer.config.seed)
    model = model.eval()
    with torch.no_grad(), trainer.autocast():
        out = model.generate(torch.tensor([prompt_ids], device=trainer.env.device), max_new_tokens=s.max_new_tokens,
                             temperature=s.temperature, top_k=s.top_k, eos_token_id=trainer.model_config.eos_token_id)
    new_ids = out[0, len(prompt_ids):].tolist()
    sample = {"step": trainer.step, "prompt": s.prompt, "completion": tokenizer.decode(new_ids),
              "temperature": s.temperature, "top_k": s.top_k}
    write_json(trainer.run_dir / "eval" / "sample.json", sample)
    return sample


def finish(trainer: Trainer, model, summary: dict[str, Any]) -> None:
    """Rank 0 only: long-context evaluation, plots, a sample, and where everything is."""
    run_dir = trainer.run_dir
    plot_loss_curve(read_metrics(run_dir / "metrics.jsonl"), run_dir / "plots" / "loss_curve.png")
    plot_validation_by_position(summary["eval"], run_dir / "plots" / "validation_by_position.png")
    long_context = long_context_eval(trainer, model)
    sample = sample_generation(trainer, model)
    final = {**summary, "loss_by_position": long_context is not None, "sample": sample}
    write_json(run_dir / "eval" / "final.json", final)
    store = trainer.store
    store.publish("metrics.jsonl", "eval", "plots", "tensorboard")
    evaluation = summary["eval"]
    text = evaluation["val_text"]
    print(f"\nfinished at step {summary['step']} ({summary['skipped_steps']} skipped)")
    print(f"validation loss: {validation_line(evaluation['val_loss'])}  (the same {text['targets']:,} tokens: "
          f"{text['spans']} span(s) of {text['span_len']:,}, cut into windows of each length)")
    late = evaluation.get("val_loss_late")
    if late:
        print(f"  past position {late['from_position']:,}: {validation_line(late['loss'])}  "
              f"({late['targets']:,} tokens; the shorter windows restart there)")
    print(f"checkpoint:      {summary['checkpoint']}")
    print(f"metrics:         {store.url('metrics.jsonl')}")
    print(f"evaluation:      {store.url('eval')}/")
    print(f"plots:           {store.url('plots')}/ (loss_curve.png, validation_by_position.png, loss_by_position.png)")
    if sample is not None:
        print(f"sample:          {store.url('eval/sample.json')}\n  {sample['prompt']}{sample['completion']!s}")


def validation_line(losses: dict[str, float]) -> str:
    return ", ".join(f"seq {k}: {v:.3f}" for k, v in sorted(losses.items(), key=lambda kv: int(kv[0])))


def main(argv: Sequence[str] | None = None) -> int:
    config, args = stage_cli(TrainConfig, __doc__.splitlines()[0], DEFAULT_CONFIG, argv, prog="train.pretrain")
    env: DistEnv = init_distributed()
    run_dir = resolve_run_dir(config, args.config)
    try:
        trainer = Trainer(config, run_dir, env)
        if env.is_main:
            trainer.run_dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps(json.loads(to_json(config)), indent=1)
            (trainer.run_dir / "config.json").write_text(text, encoding="utf-8")
            trainer.store.publish("config.json")
        if trainer.resumed_from is not None and env.is_main:
            print(f"resuming from {trainer.resumed_from} (step {trainer.step})")
        summary = trainer.fit()
        model = trainer.export_model()
        if env.is_main:
            finish(trainer, model, summary)
    except (ShardError, NonFiniteError) as exc:
        print(f"train.pretrain: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutdown(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
