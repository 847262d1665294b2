"""Read a jais / stablelm GGUF file back into the project's model, as llama.cpp's graph reads it.

The file's metadata and dequantized tensors become a ``BTLMLMHeadModel`` whose settings are
what llama.cpp's graph does with them: muP multipliers at 1 (they are folded into the
weights), untied output, attention scaled by 1/d_head (jais) or 1/sqrt(d_head) (stablelm),
ALiBi slopes from ``max_alibi_bias``. Comparing its logits with the original model checks
the export without llama.cpp; it shares the export's reading of llama.cpp's graphs, so only
llama.cpp itself (bench/gguf_check.py) proves that the file runs there. Everything is
dequantized to float32: meant for models that fit in memory several times over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize

from model.config import BTLMConfig
from model.gguf.layout import JAIS, STABLELM, GGUFExportError, llama_alibi_slopes
from model.network import BTLMLMHeadModel


def read_metadata(reader: GGUFReader) -> dict[str, Any]:
    """Scalar and string fields (arrays other than the token list are skipped)."""
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
            continue
        out[key] = field.contents()
    return out


def config_from_metadata(meta: dict[str, Any], vocab_size: int, path: Path) -> BTLMConfig:
    arch = meta.get("general.architecture")
    if arch not in (JAIS, STABLELM):
        raise GGUFExportError(f"{path}: general.architecture is {arch!r}, expected {JAIS!r} or {STABLELM!r}")
    n_embd, n_head = int(meta[f"{arch}.embedding_length"]), int(meta[f"{arch}.attention.head_count"])
    common = dict(
        vocab_size=vocab_size,
        n_positions=int(meta[f"{arch}.context_length"]),
        n_embd=n_embd,
        n_layer=int(meta[f"{arch}.block_count"]),
        n_head=n_head,
        n_inner=int(meta[f"{arch}.feed_forward_length"]),
        activation_function="swiglu",
        layer_norm_epsilon=float(meta[f"{arch}.attention.layer_norm_epsilon"]),
        mup_width_scale=1.0,
        mup_embeddings_scale=1.0,
        mup_output_alpha=1.0,
        tie_word_embeddings=False,
        bos_token_id=int(meta.get("tokenizer.ggml.bos_token_id", 0)),
        eos_token_id=int(meta.get("tokenizer.ggml.eos_token_id", 0)),
    )
    if arch == JAIS:
        return BTLMConfig(position_embedding_type="alibi", use_bias=True, mup_scale_qk_dot_by_d=True, **common)
    head_dim = n_embd // n_head
    n_rot = int(meta[f"{arch}.rope.dimension_count"])
    pct = n_rot / head_dim
    if int(head_dim * pct) != n_rot:  # keep rotary_dim exact through the float percentage
        pct = (n_rot + 0.5) / head_dim
    return BTLMConfig(position_embedding_type="rope", rotary_pct=pct,
                      rotary_base=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
                      use_bias=False, mup_scale_qk_dot_by_d=False, **common)


def read_tensors(reader: GGUFReader) -> dict[str, torch.Tensor]:
    out = {}
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type)
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))  # ggml lists dimensions innermost first
        out[t.name] = torch.from_numpy(np.array(values, dtype=np.float32).reshape(shape))
    return out


def model_from_gguf(path: str | Path) -> BTLMLMHeadModel:
    """The model llama.cpp would run from this file, with dequantized float32 weights."""
    path = Path(path)
    reader = GGUFReader(str(path))
    meta = read_metadata(reader)
    tensors = read_tensors(reader)
    config = config_from_metadata(meta, tensors["token_embd.weight"].shape[0], path)
    arch = meta["general.architecture"]
    d = config.n_embd
    state = {
        "transformer.wte.weight": tensors.pop("token_embd.weight"),
        "lm_head.weight": tensors.pop("output.weight"),
        "transformer.ln_f.weight": tensors.pop("output_norm.weight"),
        "transformer.ln_f.bias": tensors.pop("output_norm.bias"),
    }
    if arch == JAIS:
        slopes = llama_alibi_slopes(config.n_head, float(meta[f"{arch}.attention.max_alibi_bias"]))
        state["transformer.relative_pe.slopes"] = torch.tensor(slopes).unsqueeze(-1)
    names = {"attn_norm": "ln_1", "ffn_norm": "ln_2", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj",
             "ffn_up": "mlp.c_fc", "ffn_gate": "mlp.c_fc2", "ffn_down": "mlp.c_proj"}
    for i in range(config.n_layer):
        b = f"blk.{i}."
        if arch == STABLELM:
            tensors[b + "attn_qkv.weight"] = torch.cat([tensors.pop(b + f"attn_{p}.weight") for p in "qkv"])
        for gguf_name, native in names.items():
            for kind in ("weight", "bias"):
                key = b + f"{gguf_name}.{kind}"
                if key in tensors:
                    state[f"transformer.h.{i}.{native}.{kind}"] = tensors.pop(key)
    if tensors:
        raise GGUFExportError(f"{path}: tensors this reader does not know: {sorted(tensors)[:5]}")
    model = BTLMLMHeadModel(config, init=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise GGUFExportError(f"{path}: missing {missing[:5]}, unexpected {unexpected[:5]} (n_embd {d})")
    return model.eval()
