"""Parity with Hugging Face reference implementations (needs the bench extra: transformers).

- GPT-2 variant (learned positions, GELU, standard parameterization): our published
  state dict loads into ``GPT2LMHeadModel`` as is (same names, Conv1D layout) and gives
  the same logits.
- StableLM variant (partial rotary, no linear biases, gated SiLU, untied head): the same
  weights in ``StableLmForCausalLM`` give the same logits.
"""

from __future__ import annotations

import pytest
import torch

from model import BTLMConfig, BTLMLMHeadModel
from model.checkpoint.published import to_published

transformers = pytest.importorskip("transformers")


def randomized(model: BTLMLMHeadModel) -> BTLMLMHeadModel:
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def test_gpt2_variant_matches_transformers_gpt2():
    torch.manual_seed(0)
    cfg = BTLMConfig(vocab_size=101, n_positions=40, n_embd=48, n_layer=2, n_head=4, activation_function="gelu_new",
                     position_embedding_type="learned", initializer_range=0.1)
    ours = randomized(BTLMLMHeadModel(cfg))
    hf_cfg = transformers.GPT2Config(vocab_size=101, n_positions=40, n_embd=48, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    missing, unexpected = hf.load_state_dict(to_published(ours.state_dict(), cfg), strict=False)
    assert not unexpected and all(k == "lm_head.weight" or k.endswith(".attn.bias") for k in missing)
    ids = torch.randint(0, 101, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, rtol=1e-4, atol=1e-4)


def test_stablelm_variant_matches_transformers_stablelm():
    torch.manual_seed(0)
    d, H, L, inner, V = 64, 4, 2, 96, 113
    cfg = BTLMConfig(vocab_size=V, n_positions=64, n_embd=d, n_layer=L, n_head=H, n_inner=inner,
                     position_embedding_type="rope", rotary_pct=0.25, rotary_base=10000.0, use_bias=False,
                     tie_word_embeddings=False, initializer_range=0.1)
    ours = randomized(BTLMLMHeadModel(cfg))
    hf_cfg = transformers.StableLmConfig(vocab_size=V, hidden_size=d, intermediate_size=inner, num_hidden_layers=L,
                                         num_attention_heads=H, num_key_value_heads=H, partial_rotary_factor=0.25,
                                         max_position_embeddings=64, layer_norm_eps=1e-5, use_qkv_bias=False,
                                         tie_word_embeddings=False)
    hf = transformers.StableLmForCausalLM(hf_cfg).eval()
    t = ours.transformer
    state = {"model.embed_tokens.weight": t.wte.weight, "model.norm.weight": t.ln_f.weight,
             "model.norm.bias": t.ln_f.bias, "lm_head.weight": ours.lm_head.weight}
    for i, blk in enumerate(t.h):
        p = f"model.layers.{i}."
        q, k, v = blk.attn.c_attn.weight.split(d, dim=0)
        state.update({
            p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v,
            p + "self_attn.o_proj.weight": blk.attn.c_proj.weight,
            p + "mlp.up_proj.weight": blk.mlp.c_fc.weight, p + "mlp.gate_proj.weight": blk.mlp.c_fc2.weight,
            p + "mlp.down_proj.weight": blk.mlp.c_proj.weight,
            p + "input_layernorm.weight": blk.ln_1.weight, p + "input_layernorm.bias": blk.ln_1.bias,
            p + "post_attention_layernorm.weight": blk.ln_2.weight, p + "post_attention_layernorm.bias": blk.ln_2.bias,
        })
    hf.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    ids = torch.randint(0, V, (2, 19), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, rtol=1e-4, atol=1e-4)
