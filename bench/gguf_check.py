"""Does the GGUF export run in llama.cpp, and what do 8 and 4 bits cost? Measured side by side with PyTorch.

For one model (the latest ``make pretrain`` checkpoint, a given one, or a config with random
weights such as the full-size BTLM-3B-8K) this script

1. computes the PyTorch fp32 reference: logits on a few prompts, 32 greedy tokens each
   (the project's KV-cached ``generate``), perplexity on validation shard rows;
2. exports the model with ``model.gguf.export`` at f32, f16, q8_0, q4_0 and Q4_K_M (each in a
   child process, whose peak RSS shows the export streams);
3. loads each file in llama.cpp (llama-cpp-python, the ``llama`` extra) in a child process:
   its tokenizer against the project's, logits on the same prompts, greedy tokens from its own
   KV cache, perplexity on the same rows; and, in another child, the peak resident memory
   while evaluating one 2,048-token context;
4. prints the table and checks the f32 file: logits within 1e-3 (relative to the largest
   reference logit), 100% top-1 agreement, identical greedy tokens. Exit status 1 if not.

    make gguf-check                                     # installs the extras, runs the demo checkpoint
    python bench/gguf_check.py --checkpoint runs/demo/checkpoints/step-00000048
    python bench/gguf_check.py --random configs/model/btlm-3b-8k.yaml --rows 1

Steps (``--steps reference export llama``) can run separately; finished results in the work
folder are reused. The full-size model needs ~11 GB in the reference step (fp32 weights).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tokenizers import Tokenizer  # noqa: E402

from common.atomic import write_json  # noqa: E402

FORMATS = ("f32", "f16", "q8_0", "q4_0", "q4_k_m")
DEFAULT_TOKENIZER = REPO / "pipeline" / "assets" / "tokenizer.json"
WORKER = REPO / "bench" / "gguf_llama_worker.py"
F32_LOGIT_BOUND = 1e-3


def latest_demo_checkpoint() -> Path:
    found = sorted(p.parent for p in (REPO / "runs" / "demo" / "checkpoints").glob("step-*/config.json"))
    if not found:
        raise SystemExit("no checkpoint under runs/demo/checkpoints/ (run `make pretrain`, or pass --checkpoint)")
    return found[-1]


def run_worker(mode: str, target: str, work: Path, out: Path) -> float:
    """Run bench/gguf_llama_worker.py in a child process (it writes ``out``); its wall seconds."""
    t0 = time.perf_counter()
    rc = subprocess.run([sys.executable, str(WORKER), mode, target, str(work), str(out)], cwd=REPO).returncode
    if rc:
        raise SystemExit(f"gguf_llama_worker.py {mode} {target} failed with exit status {rc}")
    return time.perf_counter() - t0


def write_inputs(args, work: Path) -> dict:
    """Prompts (text and the project's token ids) and validation rows, shared by every step."""
    from bench.gguf_reference import PROMPTS, validation_rows

    path = work / "inputs.json"
    if not path.exists():
        tokenizer = Tokenizer.from_file(str(args.tokenizer))
        rows = validation_rows(args.tokens, args.rows, args.row_tokens)
        write_json(path, {"prompts": PROMPTS, "prompt_ids": [tokenizer.encode(p).ids for p in PROMPTS],
                          "rows": rows.tolist(), "new_tokens": args.new_tokens}, indent=None)
    return json.loads(path.read_text(encoding="utf-8"))


def step_reference(args, work: Path) -> Path:
    """Reference results (and, for --random, the checkpoint); returns the checkpoint folder."""
    import torch

    from bench.gguf_reference import random_checkpoint, random_model, reference, same_weights
    from model import BTLMLMHeadModel

    checkpoint = work / "checkpoint" if args.random else args.checkpoint
    if (work / "reference.json").exists():
        return checkpoint
    inputs = write_inputs(args, work)
    prompt_ids, rows = inputs["prompt_ids"], np.array(inputs["rows"], dtype=np.int64)
    torch.set_num_threads(os.cpu_count())
    t0 = time.perf_counter()
    if args.random and (checkpoint / "config.json").exists():  # written by --steps checkpoint: same seed, same model
        model = random_model(args.random, args.seed)
        if not same_weights(model, checkpoint):
            raise SystemExit(f"{checkpoint} does not hold the seed-{args.seed} model; remove it and rerun")
    elif args.random:
        model = random_checkpoint(args.random, checkpoint, args.seed)
    else:
        model = BTLMLMHeadModel.from_pretrained(checkpoint)
    result = reference(model, prompt_ids, rows, args.new_tokens, work)
    print(f"reference: {result['parameters']:,} parameters, fp32 perplexity {result['perplexity']:.3f} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return checkpoint


def step_export(args, work: Path, checkpoint: Path) -> None:
    for fmt in args.formats:
        out = work / f"model-{fmt}.gguf"
        if out.exists():
            continue
        run_worker("export", f"{checkpoint}:{fmt}:{args.tokenizer}", work, work / f"export-{fmt}.json")
        stats = read_json(work / f"export-{fmt}.json")
        print(f"export {fmt}: {out.stat().st_size / 1e6:.1f} MB in {stats['seconds']:.0f} s, "
              f"peak RSS {stats['peak_rss'] / 2**20:.0f} MiB", flush=True)


def step_llama(args, work: Path, modes: tuple[str, ...]) -> None:
    if not (work / "baseline.json").exists():
        run_worker("baseline", "-", work, work / "baseline.json")
    for fmt in args.formats:
        model = work / f"model-{fmt}.gguf"
        for mode in modes:
            out = work / f"llama-{mode}-{fmt}.json"
            if not out.exists():
                seconds = run_worker(mode, str(model), work, out)
                print(f"llama.cpp {mode} {fmt}: {seconds:.0f} s", flush=True)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def table(args, work: Path, label: str) -> bool:
    ref = read_json(work / "reference.json")
    ref_logits = np.load(work / "reference-logits.npz")
    baseline = read_json(work / "baseline.json") or {}
    rows, ok = [], True
    for fmt in args.formats:
        ev, probe = read_json(work / f"llama-eval-{fmt}.json"), read_json(work / f"llama-probe-{fmt}.json")
        if ev is None or probe is None:
            continue
        got = np.load(work / f"logits-model-{fmt}.npz")
        rel = max(float(np.abs(got[k] - ref_logits[k]).max() / np.abs(ref_logits[k]).max()) for k in ref_logits)
        agree = np.concatenate([got[k].argmax(-1) == ref_logits[k].argmax(-1) for k in ref_logits])
        same = [next((i for i, (a, b) in enumerate(zip(g, r)) if a != b), len(r)) for g, r in zip(ev["greedy"], ref["greedy"])]
        row = {"format": fmt, "file_mb": (work / f"model-{fmt}.gguf").stat().st_size / 1e6, "logit_rel_diff": rel,
               "top1": float(agree.mean()), "greedy_same": f"{min(same)}/{args.new_tokens}", "tokenizer_ok": ev["tokenizer_ok"],
               "perplexity": ev["perplexity"], "perplexity_fp32_pytorch": ref["perplexity"],
               "peak_rss_2048_mb": probe["peak_rss"] / 2**20, "peak_rss_eval_mb": ev["peak_rss"] / 2**20,
               "peak_rss_2048_nommap_mb": (read_json(work / f"llama-probe-nommap-{fmt}.json") or {}).get("peak_rss", 0) / 2**20,
               "prompt_tokens_per_s": ev["prompt_tokens_per_s"],
               "export_peak_rss_mb": (read_json(work / f"export-{fmt}.json") or {}).get("peak_rss", 0) / 2**20}
        rows.append(row)
        if fmt == "f32":
            passed = rel <= F32_LOGIT_BOUND and agree.all() and min(same) == args.new_tokens and ev["tokenizer_ok"]
            ok &= bool(passed)
            print(f"f32 check ({label}): {'PASS' if passed else 'FAIL'} (logits {rel:.1e} <= {F32_LOGIT_BOUND:g}, "
                  f"top-1 {agree.mean():.1%}, greedy {min(same)}/{args.new_tokens}, tokenizer {ev['tokenizer_ok']})")
    print(f"\n{label}: {ref['parameters']:,} parameters; perplexity on {ref['rows']} validation rows x {ref['row_tokens']} "
          f"tokens; PyTorch fp32 perplexity {ref['perplexity']:.3f}")
    print(f"llama.cpp: {baseline.get('system_info', '?').strip()}")
    print(f"python + llama_cpp alone: {baseline.get('peak_rss', 0) / 2**20:.0f} MiB RSS\n")
    print("| format | file (MB) | logit diff (rel) | top-1 agree | greedy same | ppl llama.cpp | ppl PyTorch fp32 "
          "| peak RSS 2,048-token context (MiB) | the same, no mmap (MiB) | peak RSS, all-logits eval (MiB) "
          "| export peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['file_mb']:.1f} | {r['logit_rel_diff']:.1e} | {r['top1']:.1%} | {r['greedy_same']} "
              f"| {r['perplexity']:.3f} | {r['perplexity_fp32_pytorch']:.3f} | {r['peak_rss_2048_mb']:.0f} "
              f"| {r['peak_rss_2048_nommap_mb']:.0f} "
              f"| {r['peak_rss_eval_mb']:.0f} | {r['export_peak_rss_mb']:.0f} |")
    write_json(work / "results.json", {"label": label, "rows": rows, "baseline": baseline, "reference": ref})
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="default: the latest runs/demo/checkpoints/step-*")
    parser.add_argument("--random", type=Path, metavar="CONFIG", help="a model config, random weights (full-size runs)")
    parser.add_argument("--tokenizer", type=Path, help="default: the checkpoint's tokenizer.json, else the project's")
    parser.add_argument("--tokens", type=Path, default=REPO / "data" / "tokens" / "seq2048" / "validation")
    parser.add_argument("--rows", type=int, default=4, help="validation rows for the perplexity")
    parser.add_argument("--row-tokens", type=int, default=2048)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--steps", nargs="+", choices=("checkpoint", "reference", "export", "probe", "llama"),
                        default=["reference", "export", "llama"],
                        help="checkpoint: write the --random weights only; probe: only the memory runs")
    parser.add_argument("--work", type=Path, help="default: runs/gguf-check/<model name>")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.random and args.checkpoint is None:
        args.checkpoint = latest_demo_checkpoint()
    if args.random:
        label = args.random.stem
    elif args.checkpoint.parent.name == "checkpoints":  # runs/<run>/checkpoints/step-N
        label = f"{args.checkpoint.parent.parent.name}/{args.checkpoint.name}"
    else:
        label = args.checkpoint.name
    if args.tokenizer is None:
        own = None if args.random else args.checkpoint / "tokenizer.json"
        args.tokenizer = own if own is not None and own.exists() else DEFAULT_TOKENIZER
    work = args.work or REPO / "runs" / "gguf-check" / label.replace("/", "-")
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "checkpoint" if args.random else args.checkpoint
    if "checkpoint" in args.steps and args.random and not (checkpoint / "config.json").exists():
        from bench.gguf_reference import random_checkpoint

        write_inputs(args, work)
        random_checkpoint(args.random, checkpoint, args.seed)  # the weights only, no reference yet
    if "reference" in args.steps:
        checkpoint = step_reference(args, work)
    if "export" in args.steps:
        step_export(args, work, checkpoint)
    if "llama" in args.steps or "probe" in args.steps:
        step_llama(args, work, ("probe", "probe-nommap", "eval") if "llama" in args.steps else ("probe", "probe-nommap"))
    if (work / "reference.json").exists():
        if not table(args, work, label):
            sys.exit(1)
        return
    for fmt in args.formats:  # memory runs only, no reference yet
        for mode in ("probe", "probe-nommap"):
            probe = read_json(work / f"llama-{mode}-{fmt}.json")
            if probe is not None:
                how = "file mapped" if mode == "probe" else "file read, no mmap"
                print(f"{label} {fmt}: file {(work / f'model-{fmt}.gguf').stat().st_size / 1e6:.1f} MB, peak RSS "
                      f"{probe['peak_rss'] / 2**20:.0f} MiB evaluating {probe['context']} tokens, {how} "
                      f"({probe['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
