"""One llama.cpp measurement in a process of its own (so its peak RSS is its own); run by gguf_check.py.

    python bench/gguf_llama_worker.py eval  MODEL.gguf WORK_DIR OUT.json   # logits, greedy, perplexity
    python bench/gguf_llama_worker.py probe MODEL.gguf WORK_DIR OUT.json   # memory: one 2,048-token context
    python bench/gguf_llama_worker.py baseline - WORK_DIR OUT.json         # the interpreter + llama_cpp alone
    python bench/gguf_llama_worker.py export CHECKPOINT:QUANT:TOKENIZER WORK_DIR OUT.json

WORK_DIR holds ``inputs.json`` (prompts as text and project token ids, validation rows) written
by the driver. ``eval`` keeps every position's logits (the perplexity needs them, and they
cost n_ctx x vocab x 4 bytes twice: llama.cpp's buffer and llama-cpp-python's copy); ``probe``
asks only for the last position's logits, as an application generating text would.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.atomic import write_json  # noqa: E402


def peak_rss_bytes() -> int:
    """This process's peak resident memory (file-backed model pages included).

    /proc's VmHWM belongs to the address space made at exec; ru_maxrss would also count the
    parent's memory, inherited at fork.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def load(model: str, n_ctx: int, logits_all: bool, use_mmap: bool = True):
    from llama_cpp import Llama

    return Llama(model_path=model, n_ctx=n_ctx, n_batch=512, n_threads=os.cpu_count(),
                 n_threads_batch=os.cpu_count(), logits_all=logits_all, use_mmap=use_mmap, verbose=False)


def log_softmax_nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed negative log-likelihood of ``targets`` under ``logits`` [T, V], in float64 chunks."""
    total = 0.0
    for start in range(0, len(targets), 256):
        chunk = logits[start:start + 256].astype(np.float64)
        top = chunk.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(chunk - top).sum(axis=1))
        total += float((lse - chunk[np.arange(len(chunk)), targets[start:start + 256]]).sum())
    return total


def run_eval(model: str, inputs: dict, work: Path) -> dict:
    rows = np.array(inputs["rows"], dtype=np.int64)
    n_ctx = max(rows.shape[1], max(len(p) for p in inputs["prompt_ids"]) + inputs["new_tokens"])
    t0 = time.perf_counter()
    llm = load(model, n_ctx, logits_all=True)
    load_s = time.perf_counter() - t0
    logits, greedy, tokenizer_ok = {}, [], []
    for i, (text, ids) in enumerate(zip(inputs["prompts"], inputs["prompt_ids"])):
        tokenizer_ok.append(llm.tokenize(text.encode(), add_bos=False, special=False) == ids
                            and llm.detokenize(ids).decode() == text)
        llm.reset()
        llm.eval(ids)
        logits[f"prompt{i}"] = np.array(llm.scores[: len(ids)], dtype=np.float32)
        new = []
        for _ in range(inputs["new_tokens"]):  # greedy with llama.cpp's KV cache, one token per decode
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            new.append(token)
            llm.eval([token])
        greedy.append(new)
    np.savez(work / f"logits-{Path(model).stem}.npz", **logits)
    nll, count, t1 = 0.0, 0, time.perf_counter()
    for row in rows:
        llm.reset()
        llm.eval(row.tolist())
        nll += log_softmax_nll(np.asarray(llm.scores[: len(row) - 1]), row[1:])
        count += len(row) - 1
    eval_s = time.perf_counter() - t1
    llm.close()
    return {"greedy": greedy, "perplexity": float(np.exp(nll / count)), "tokenizer_ok": all(tokenizer_ok),
            "load_s": load_s, "prompt_tokens_per_s": count / eval_s if eval_s else None,
            "peak_rss": peak_rss_bytes()}


def run_probe(model: str, inputs: dict, use_mmap: bool) -> dict:
    """Peak memory evaluating one context. With mmap the file's pages count in RSS as well
    as the copies llama.cpp repacks for its CPU kernels; without, the file is read once
    into the buffers the kernels use (the memory a device without spare page cache needs)."""
    row = inputs["rows"][0]
    llm = load(model, len(row), logits_all=False, use_mmap=use_mmap)
    t0 = time.perf_counter()
    llm.eval(row)
    result = {"context": len(row), "seconds": time.perf_counter() - t0, "peak_rss": peak_rss_bytes(), "mmap": use_mmap}
    llm.close()
    return result


def main() -> None:
    mode, model, work, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    if mode == "export":  # the exporter's own peak memory: it streams tensor by tensor
        from model.gguf.export import export_gguf

        checkpoint, quant, tokenizer = model.split(":")
        t0 = time.perf_counter()
        export_gguf(Path(checkpoint), work / f"model-{quant}.gguf", quant, Path(tokenizer))
        write_json(out, {"seconds": time.perf_counter() - t0, "peak_rss": peak_rss_bytes()})
        return
    inputs = json.loads((work / "inputs.json").read_text(encoding="utf-8"))
    if mode == "eval":
        result = run_eval(model, inputs, work)
    elif mode in ("probe", "probe-nommap"):
        result = run_probe(model, inputs, use_mmap=mode == "probe")
    elif mode == "baseline":
        import llama_cpp

        result = {"peak_rss": peak_rss_bytes(), "system_info": llama_cpp.llama_print_system_info().decode()}
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    write_json(out, result)


if __name__ == "__main__":
    main()
