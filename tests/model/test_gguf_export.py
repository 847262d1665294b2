"""GGUF export read back with the gguf package: llama.cpp's view of the file equals the project's model.

The read-back model (model/gguf/read.py) applies llama.cpp's graph semantics to the
file (muP at 1, untied output, the graph's attention scale, slopes from max_alibi_bias), so
these tests prove the tensors, folding, padding and metadata; bench/gguf_check.py proves the
file in llama.cpp itself. Tiny models with a small byte-level BPE keep the files small; one
test embeds the project's GPT-2 tokenizer.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, TokenType
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from model import BTLMConfig, BTLMLMHeadModel
from model.attention.positions import alibi_slopes
from model.gguf.export import export_gguf, write_gguf
from model.gguf.layout import GGUFExportError, llama_alibi_slopes
from model.gguf.read import model_from_gguf
from tests.conftest import REPO

GPT2_TOKENIZER = REPO / "pipeline" / "assets" / "tokenizer.json"
TINY_VOCAB = 384

# Per format, measured on the models below (largest over the three) and allowed with a margin:
# - largest |logit difference| / largest |logit|: f32 1.4e-7, f16 3.5e-4, q8_0 7.5e-3, q4_0 0.125
#   (the muP "btlm" model: q4_0 0.041; random standard-scale models have flat logits);
# - mean KL(model || read-back) per position: f32 ~0, f16 3e-8, q8_0 7.3e-6, q4_0 1.9e-3;
# - top-1 agreement over the 96 positions: f32 and f16 1, q8_0 0.979, q4_0 0.781 (btlm: 1.0).
# bench/gguf_check.py measures a trained model in llama.cpp itself.
BOUNDS = {"f32": 1e-6, "f16": 7e-4, "q8_0": 1.5e-2, "q4_0": 0.2}
MAX_KL = {"f32": 1e-6, "f16": 1e-6, "q8_0": 3e-5, "q4_0": 5e-3}
MIN_TOP1 = {"f32": 1.0, "f16": 1.0, "q8_0": 0.95, "q4_0": 0.7}


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    """A byte-level BPE like GPT-2's, trained on the README, with <|endoftext|> as a special token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([(REPO / "README.md").read_text(encoding="utf-8")], trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    assert tok.get_vocab_size() == TINY_VOCAB
    return path


# BTLM: muP multipliers, 6 heads (ALiBi slopes interleaved: not a power of two), n_inner 170 (not a
# multiple of 32). Its standard-scale twin has no linear biases and 1/sqrt(d_head) attention.
# StableLM: rotary on 25%, no biases, untied, vocabulary padded beyond the tokenizer.
CONFIGS = {
    "btlm": dict(vocab_size=TINY_VOCAB, n_positions=256, n_embd=96, n_layer=2, n_head=6, n_inner=170,
                 mup_base_width=48, mup_embeddings_scale=14.6, mup_output_alpha=2.22, mup_scale_qk_dot_by_d=True,
                 initializer_range=0.073, eos_token_id=0, bos_token_id=0),
    "btlm-nobias-sqrt": dict(vocab_size=TINY_VOCAB, n_positions=256, n_embd=64, n_layer=2, n_head=4, n_inner=96,
                             use_bias=False, tie_word_embeddings=False, eos_token_id=0, bos_token_id=0),
    "stablelm": dict(vocab_size=TINY_VOCAB + 64, n_positions=256, n_embd=64, n_layer=2, n_head=4, n_inner=160,
                     position_embedding_type="rope", rotary_pct=0.25, rotary_base=5000.0, use_bias=False,
                     tie_word_embeddings=False, mup_embeddings_scale=2.0, mup_output_alpha=1.5,
                     eos_token_id=0, bos_token_id=0),
}


def save_checkpoint(path, **cfg):
    torch.manual_seed(0)
    model = BTLMLMHeadModel(BTLMConfig(**cfg)).eval()
    with torch.no_grad():  # non-trivial biases and norms: a wrong mapping cannot hide behind zeros and ones
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


def ids(vocab, shape=(2, 48)):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(1))


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {name: (root / name, save_checkpoint(root / name, **cfg)) for name, cfg in CONFIGS.items()}


@pytest.mark.parametrize("quant", list(BOUNDS))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_read_back_matches_the_model(tmp_path, checkpoints, tiny_tokenizer, name, quant):
    ckpt, model = checkpoints[name]
    out = export_gguf(ckpt, tmp_path / f"{name}.gguf", quant, tokenizer=tiny_tokenizer)
    back = model_from_gguf(out)
    x = ids(model.config.vocab_size)
    with torch.no_grad():
        want, got = model(x).logits, back(x).logits
    assert relative_error(got, want) <= BOUNDS[quant]
    kl = torch.nn.functional.kl_div(got.log_softmax(-1), want.log_softmax(-1), log_target=True, reduction="none")
    assert kl.sum(-1).mean().item() <= MAX_KL[quant]
    assert (got.argmax(-1) == want.argmax(-1)).float().mean().item() >= MIN_TOP1[quant]
    if name == "btlm" and quant != "f32":  # the muP model's logits are not flat: 4-bit keeps every top-1
        assert torch.equal(got.argmax(-1), want.argmax(-1))
    # Cached decoding through the read-back model agrees too (ALiBi / rotary offsets in the cache).
    if quant == "f32":
        prompt = x[:1, :8]
        assert torch.equal(back.generate(prompt, 16, temperature=0), model.generate(prompt, 16, temperature=0))


def test_tensor_types_and_padding(tmp_path, checkpoints, tiny_tokenizer):
    ckpt, _ = checkpoints["btlm"]
    for quant, matrix_type, n_ff in [("f32", GGMLQuantizationType.F32, 170), ("f16", GGMLQuantizationType.F16, 170),
                                     ("q8_0", GGMLQuantizationType.Q8_0, 192), ("q4_0", GGMLQuantizationType.Q4_0, 192)]:
        reader = GGUFReader(str(export_gguf(ckpt, tmp_path / f"{quant}.gguf", quant, tokenizer=tiny_tokenizer)))
        assert reader.fields["jais.feed_forward_length"].contents() == n_ff
        for t in reader.tensors:
            assert t.tensor_type == (matrix_type if len(t.shape) == 2 else GGMLQuantizationType.F32), (quant, t.name)
        shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}  # ggml order: innermost first
        assert shapes["blk.0.ffn_up.weight"] == (96, n_ff) and shapes["blk.0.ffn_down.weight"] == (n_ff, 96)
        assert shapes["output.weight"] == (96, TINY_VOCAB)  # the tied head is written out


def test_zero_padding_leaves_the_function_unchanged(tmp_path, checkpoints, tiny_tokenizer):
    ckpt, model = checkpoints["btlm"]
    write_gguf(ckpt, tmp_path / "padded.gguf", "f32", tiny_tokenizer, pad_multiple=64)
    back = model_from_gguf(tmp_path / "padded.gguf")
    assert back.config.n_inner == 192
    mlp = back.transformer.h[1].mlp
    assert not mlp.c_fc.weight[170:].any() and not mlp.c_fc2.weight[170:].any()
    assert not mlp.c_fc.bias[170:].any() and not mlp.c_proj.weight[:, 170:].any()
    x = ids(TINY_VOCAB)
    with torch.no_grad():
        assert relative_error(back(x).logits, model(x).logits) <= 1e-5


def test_folded_multipliers_and_metadata(tmp_path, checkpoints, tiny_tokenizer):
    ckpt, model = checkpoints["btlm"]
    reader = GGUFReader(str(export_gguf(ckpt, tmp_path / "m.gguf", "f32", tokenizer=tiny_tokenizer)))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    cfg = model.config
    wte = model.transformer.wte.weight.detach().numpy()
    np.testing.assert_allclose(tensors["token_embd.weight"], wte * 14.6, rtol=1e-6)
    np.testing.assert_allclose(tensors["output.weight"], wte * 2.22 * cfg.mup_width_scale, rtol=1e-6)
    assert field("general.architecture") == "jais" and field("general.file_type") == 0
    assert (field("jais.context_length"), field("jais.embedding_length"), field("jais.block_count")) == (256, 96, 2)
    assert field("jais.attention.head_count") == 6
    assert field("jais.attention.layer_norm_epsilon") == pytest.approx(1e-5)
    assert llama_alibi_slopes(6, field("jais.attention.max_alibi_bias")) == pytest.approx(alibi_slopes(6), rel=1e-6)
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"

    rope_ckpt, rope_model = checkpoints["stablelm"]
    reader = GGUFReader(str(export_gguf(rope_ckpt, tmp_path / "s.gguf", "f32", tokenizer=tiny_tokenizer)))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    assert field("general.architecture") == "stablelm"
    assert field("stablelm.rope.dimension_count") == 4 and field("stablelm.rope.freq_base") == 5000.0
    assert field("stablelm.use_parallel_residual") is False
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"} <= names
    assert not any(n.endswith(".bias") and not n.split(".")[-2].endswith("norm") for n in names)
    types = field("tokenizer.ggml.token_type")
    assert len(types) == TINY_VOCAB + 64 and types[TINY_VOCAB:] == [TokenType.UNUSED] * 64
    assert field("tokenizer.ggml.tokens")[TINY_VOCAB] == f"[PAD{TINY_VOCAB}]"


@pytest.mark.slow
def test_gpt2_tokenizer_embedded_exactly(tmp_path):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, n_positions=128, n_embd=32, n_layer=1, n_head=2, n_inner=64)
    reader = GGUFReader(str(export_gguf(ckpt, tmp_path / "g.gguf", "q8_0", tokenizer=GPT2_TOKENIZER)))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    data = json.loads(GPT2_TOKENIZER.read_text(encoding="utf-8"))
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == 50257 and all(tokens[i] == t for t, i in data["model"]["vocab"].items())
    assert tokens[50256] == "<|endoftext|>"
    types = field("tokenizer.ggml.token_type")
    assert types[50256] == TokenType.CONTROL and set(types[:50256]) == {TokenType.NORMAL}
    merges = field("tokenizer.ggml.merges")
    assert len(merges) == 50000 and merges[:3] == ["Ġ t", "Ġ a", "h e"]
    assert field("tokenizer.ggml.bos_token_id") == 50256 and field("tokenizer.ggml.eos_token_id") == 50256
    assert field("tokenizer.ggml.add_bos_token") is False


def refused(tmp_path, tokenizer, match, **cfg):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, **dict(CONFIGS["btlm"], **cfg))
    out = tmp_path / "out.gguf"
    with pytest.raises(GGUFExportError, match=match):
        export_gguf(ckpt, out, "q4_0", tokenizer=tokenizer)
    assert not out.exists() and not list(tmp_path.glob("out.gguf*"))


@pytest.mark.parametrize("cfg, match", [
    (dict(alibi_scaling={"type": "linear", "factor": 2.0}), "alibi_scaling"),
    (dict(position_embedding_type="learned"), "position_embedding_type='learned'"),
    (dict(activation_function="gelu_new"), "activation_function='gelu_new'"),
    (dict(position_embedding_type="rope"), "use_bias=true with position_embedding_type='rope'"),
], ids=["alibi_scaling", "learned", "gelu", "rotary-btlm"])
def test_refuses_what_llama_cpp_cannot_run(tmp_path, tiny_tokenizer, cfg, match):
    refused(tmp_path, tiny_tokenizer, match, **cfg)


def test_refuses_non_geometric_alibi_slopes(tmp_path, tiny_tokenizer):
    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, **CONFIGS["btlm"])
    tensors = load_file(str(ckpt / "model.safetensors"))
    tensors["transformer.relative_pe.slopes"][3] *= 1.5
    save_file(tensors, str(ckpt / "model.safetensors"))
    with pytest.raises(GGUFExportError, match="relative_pe.slopes"):
        export_gguf(ckpt, tmp_path / "out.gguf", "f32", tokenizer=tiny_tokenizer)


def test_bad_inputs_are_named(tmp_path, checkpoints, tiny_tokenizer):
    ckpt, _ = checkpoints["btlm"]
    with pytest.raises(GGUFExportError, match="q3_k"):
        export_gguf(ckpt, tmp_path / "x.gguf", "q3_k", tokenizer=tiny_tokenizer)
    with pytest.raises(GGUFExportError, match="tokenizer.json"):
        export_gguf(ckpt, tmp_path / "x.gguf", "f32")  # the checkpoint folder carries none
    with pytest.raises(GGUFExportError, match="vocab_size=384"):
        export_gguf(ckpt, tmp_path / "x.gguf", "f32", tokenizer=GPT2_TOKENIZER)
    small = tmp_path / "small"
    save_checkpoint(small, **dict(CONFIGS["btlm"], n_inner=128))
    (small / "config.json").write_text(json.dumps(dict(json.loads((small / "config.json").read_text()), n_inner=170)))
    with pytest.raises(GGUFExportError, match=r"mlp.c_fc.weight has shape \(96, 128\), config.json expects \(96, 170\)"):
        export_gguf(small, tmp_path / "x.gguf", "f32", tokenizer=tiny_tokenizer)
    assert not list(tmp_path.glob("x.gguf*"))


def test_q4_k_m_without_llama_cpp_is_a_clear_error(tmp_path, checkpoints, tiny_tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as if not installed
    ckpt, _ = checkpoints["btlm"]
    with pytest.raises(GGUFExportError, match=r"llama\.cpp's quantizer: pip install"):
        export_gguf(ckpt, tmp_path / "k.gguf", "q4_k_m", tokenizer=tiny_tokenizer)
    assert not list(tmp_path.iterdir())  # neither the output nor the f32 intermediate is left


def test_q4_k_m_through_llama_cpp(tmp_path, checkpoints, tiny_tokenizer):
    pytest.importorskip("llama_cpp")  # the optional llama extra (make gguf-check installs it)
    ckpt, model = checkpoints["btlm"]
    out = export_gguf(ckpt, tmp_path / "k.gguf", "q4_k_m", tokenizer=tiny_tokenizer)
    reader = GGUFReader(str(out))
    assert reader.fields["general.file_type"].contents() == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert reader.fields["jais.feed_forward_length"].contents() == 256
    x = ids(TINY_VOCAB)
    with torch.no_grad():
        assert relative_error(model_from_gguf(out)(x).logits, model(x).logits) <= BOUNDS["q4_0"]
    assert [p.name for p in tmp_path.iterdir()] == ["k.gguf"]
