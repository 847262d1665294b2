"""transformers' native StableLM layout (``model_type: stablelm``) <-> the project's model: ``config_to_stablelm`` /
``state_to_stablelm`` and ``config_from_stablelm`` / ``state_from_stablelm``.

StableLM-3B-4E1T is this codebase's rotary variant: partial rotary (rotate-half on the
first ``partial_rotary_factor`` of each head), gated SiLU MLP, LayerNorm with bias, no
biases in the linears (or on q/k/v only), attention scaled by 1/sqrt(head_dim).

Writing folds the project's muP multipliers into the weights, so any rotary SwiGLU model
without linear biases outside q/k/v can be written: the embedding multiplier into
``embed_tokens``, the logit multiplier into ``lm_head`` (untying the two when either is
not 1) and a 1/head_dim attention scale into ``q_proj``. Reading gives a model with every
multiplier at 1 and the same logits; q/k/v biases load as ``use_bias: true`` with the
other biases at zero, which is the same function.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from model.config import BTLMConfig, ModelConfigError


class StableLMFormatError(ValueError):
    """The model (or folder) cannot be expressed in the native StableLM layout; says why."""


def needs_untie(config: BTLMConfig) -> bool:
    return config.tie_word_embeddings and (config.embedding_scale != 1.0 or config.output_logits_scale != 1.0)


def unsupported_reasons(config: BTLMConfig, state: dict[str, torch.Tensor] | None = None) -> list[str]:
    """Why this model has no native StableLM form (empty list: it has one)."""
    reasons = []
    if config.position_embedding_type != "rope":
        reasons.append(f"position_embedding_type is {config.position_embedding_type!r} (StableLM is rotary)")
    if config.activation_function != "swiglu":
        reasons.append(f"activation_function is {config.activation_function!r} (StableLM's MLP is gated SiLU)")
    if config.use_bias and state is not None:
        nonzero = [n for n, t in state.items() if n.endswith(".bias") and ("attn.c_proj" in n or ".mlp." in n)
                   and bool(t.detach().abs().max() > 0)]
        if nonzero:
            reasons.append(f"linear biases outside q/k/v are not zero ({nonzero[0]}, ...): StableLM has none")
    return reasons


def config_to_stablelm(config: BTLMConfig) -> dict[str, Any]:
    """config.json of the native layout (4.x field names plus 5.x ``rope_parameters``)."""
    rope = {"rope_type": "default", "rope_theta": float(config.rotary_base), "partial_rotary_factor": config.rotary_pct}
    return {
        "model_type": "stablelm",
        "architectures": ["StableLmForCausalLM"],
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.n_inner,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_head,
        "hidden_act": "silu",
        "max_position_embeddings": config.n_positions,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_epsilon,
        "use_cache": True,
        "tie_word_embeddings": config.tie_word_embeddings and not needs_untie(config),
        "rope_theta": float(config.rotary_base),
        "partial_rotary_factor": config.rotary_pct,
        "rope_scaling": None,
        "rope_parameters": rope,
        "use_qkv_bias": config.use_bias,
        "qk_layernorm": False,
        "use_parallel_residual": False,
        "hidden_dropout": config.resid_pdrop,
        "attention_dropout": config.attn_pdrop,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "dtype": "float32",
        "torch_dtype": "float32",
    }


def state_to_stablelm(state: dict[str, torch.Tensor], config: BTLMConfig) -> dict[str, torch.Tensor]:
    """Native state dict -> StableLmForCausalLM names, multipliers folded in."""
    reasons = unsupported_reasons(config, state)
    if reasons:
        raise StableLMFormatError("; ".join(reasons))
    d = config.n_embd
    q_fold = config.attention_scale * math.sqrt(config.head_dim)  # StableLM scales by 1/sqrt(head_dim)
    wte = state["transformer.wte.weight"].detach()
    out = {"model.embed_tokens.weight": wte * config.embedding_scale,
           "model.norm.weight": state["transformer.ln_f.weight"], "model.norm.bias": state["transformer.ln_f.bias"]}
    if not config.tie_word_embeddings or needs_untie(config):
        head = state.get("lm_head.weight", wte)
        out["lm_head.weight"] = head * config.output_logits_scale
    for i in range(config.n_layer):
        src, dst = f"transformer.h.{i}.", f"model.layers.{i}."
        q, k, v = state[src + "attn.c_attn.weight"].split(d, dim=0)
        out.update({
            dst + "self_attn.q_proj.weight": q * q_fold, dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": v, dst + "self_attn.o_proj.weight": state[src + "attn.c_proj.weight"],
            dst + "mlp.up_proj.weight": state[src + "mlp.c_fc.weight"],
            dst + "mlp.gate_proj.weight": state[src + "mlp.c_fc2.weight"],
            dst + "mlp.down_proj.weight": state[src + "mlp.c_proj.weight"],
            dst + "input_layernorm.weight": state[src + "ln_1.weight"],
            dst + "input_layernorm.bias": state[src + "ln_1.bias"],
            dst + "post_attention_layernorm.weight": state[src + "ln_2.weight"],
            dst + "post_attention_layernorm.bias": state[src + "ln_2.bias"],
        })
        if config.use_bias:
            qb, kb, vb = state[src + "attn.c_attn.bias"].split(d, dim=0)
            out.update({dst + "self_attn.q_proj.bias": qb * q_fold, dst + "self_attn.k_proj.bias": kb,
                        dst + "self_attn.v_proj.bias": vb})
    return {k: v.detach().contiguous() for k, v in out.items()}


def config_from_stablelm(data: dict[str, Any], where: str) -> BTLMConfig:
    """The project config of a native StableLM config.json (every muP multiplier at 1)."""

    def get(key: str, default: Any = None) -> Any:
        return data.get(key, default)

    rope = get("rope_parameters") or {}
    unsupported = []
    if get("num_key_value_heads", get("num_attention_heads")) != get("num_attention_heads"):
        unsupported.append("grouped-query attention (num_key_value_heads != num_attention_heads)")
    if get("qk_layernorm", False):
        unsupported.append("qk_layernorm")
    if get("use_parallel_residual", False):
        unsupported.append("use_parallel_residual")
    if get("hidden_act", "silu") != "silu":
        unsupported.append(f"hidden_act {get('hidden_act')!r}")
    if get("rope_scaling") or rope.get("rope_type", "default") != "default":
        unsupported.append("rope scaling")
    if unsupported:
        raise ModelConfigError(f"{where}: StableLM features this model does not implement: {', '.join(unsupported)}")
    fields = {
        "vocab_size": get("vocab_size", 50304), "n_positions": get("max_position_embeddings", 4096),
        "n_embd": get("hidden_size", 2560), "n_layer": get("num_hidden_layers", 32),
        "n_head": get("num_attention_heads", 32), "n_inner": get("intermediate_size", 6912),
        "activation_function": "swiglu", "position_embedding_type": "rope",
        "rotary_pct": float(rope.get("partial_rotary_factor", get("partial_rotary_factor", 0.25))),
        "rotary_base": float(rope.get("rope_theta", get("rope_theta", 10000.0))),
        "use_bias": bool(get("use_qkv_bias", False)), "layer_norm_epsilon": get("layer_norm_eps", 1e-5),
        "initializer_range": get("initializer_range", 0.02), "scale_attn_weights": True,
        "resid_pdrop": float(get("hidden_dropout", 0.0)), "embd_pdrop": 0.0,
        "attn_pdrop": float(get("attention_dropout", 0.0)), "mup_width_scale": 1.0, "mup_embeddings_scale": 1.0,
        "mup_output_alpha": 1.0, "mup_scale_qk_dot_by_d": False,
        "tie_word_embeddings": bool(get("tie_word_embeddings", False)), "use_cache": bool(get("use_cache", True)),
    }
    for key in ("bos_token_id", "eos_token_id"):
        if isinstance(get(key), int):
            fields[key] = get(key)
    return BTLMConfig.from_dict(fields, where)


def state_from_stablelm(tensors: dict[str, torch.Tensor], config: BTLMConfig, where: str) -> dict[str, torch.Tensor]:
    """StableLmForCausalLM tensors -> native state dict (biases StableLM lacks are zeros)."""
    # Old exports carry the rotary frequencies as buffers; they are recomputed here.
    tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}

    def take(name: str) -> torch.Tensor:
        try:
            return tensors.pop(name)
        except KeyError:
            raise StableLMFormatError(f"{where}: StableLM tensor {name} is missing") from None

    out = {"transformer.wte.weight": take("model.embed_tokens.weight"),
           "transformer.ln_f.weight": take("model.norm.weight"), "transformer.ln_f.bias": take("model.norm.bias")}
    if "lm_head.weight" in tensors:
        out["lm_head.weight"] = take("lm_head.weight")
    for i in range(config.n_layer):
        src, dst = f"model.layers.{i}.", f"transformer.h.{i}."
        q, k, v = (take(src + f"self_attn.{p}_proj.weight") for p in "qkv")
        out.update({
            dst + "attn.c_attn.weight": torch.cat((q, k, v), dim=0),
            dst + "attn.c_proj.weight": take(src + "self_attn.o_proj.weight"),
            dst + "mlp.c_fc.weight": take(src + "mlp.up_proj.weight"),
            dst + "mlp.c_fc2.weight": take(src + "mlp.gate_proj.weight"),
            dst + "mlp.c_proj.weight": take(src + "mlp.down_proj.weight"),
            dst + "ln_1.weight": take(src + "input_layernorm.weight"), dst + "ln_1.bias": take(src + "input_layernorm.bias"),
            dst + "ln_2.weight": take(src + "post_attention_layernorm.weight"),
            dst + "ln_2.bias": take(src + "post_attention_layernorm.bias"),
        })
        if config.use_bias:
            qb, kb, vb = (take(src + f"self_attn.{p}_proj.bias") for p in "qkv")
            out[dst + "attn.c_attn.bias"] = torch.cat((qb, kb, vb))
            out[dst + "attn.c_proj.bias"] = q.new_zeros(config.n_embd)
            out[dst + "mlp.c_fc.bias"] = q.new_zeros(config.n_inner)
            out[dst + "mlp.c_fc2.bias"] = q.new_zeros(config.n_inner)
            out[dst + "mlp.c_proj.bias"] = q.new_zeros(config.n_embd)
    if tensors:
        raise StableLMFormatError(f"{where}: StableLM tensors this model does not use: {sorted(tensors)[:5]}")
    if config.tie_word_embeddings and "lm_head.weight" in out:
        lm = out.pop("lm_head.weight")
        if not torch.equal(lm, out["transformer.wte.weight"]):
            raise StableLMFormatError(f"{where}: tie_word_embeddings is true but lm_head.weight differs from embed_tokens")
    return out
