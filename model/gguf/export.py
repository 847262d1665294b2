"""Export a checkpoint as one GGUF file that llama.cpp runs (``--format gguf`` of ``model.export``).

    export_gguf(Path("runs/demo/checkpoints/step-00000048"), Path("demo-q4_0.gguf"), "q4_0")

BTLM (ALiBi) becomes llama.cpp's ``jais`` architecture and the StableLM variant (rotary, no
linear biases) ``stablelm`` (layout.py says how, and what is refused). The tokenizer
(``tokenizer.json`` of the checkpoint, or the one given) is embedded. Tensors are read from
the safetensors files one at a time and written straight to the output, so a 2.6B-parameter
checkpoint converts in a few hundred MB of memory. The file appears under its final name
only when complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from common.atomic import atomic_path, temp_path
from model.attention.positions import alibi_slopes
from model.checkpoint.published import CONFIG_NAME, CONV1D_SUFFIXES, INDEX_NAME, WEIGHTS_NAME
from model.config import BTLMConfig, ModelConfigError
from model.gguf import layout as gguf_layout
from model.gguf.layout import GGUFExportError
from model.network import BTLMLMHeadModel

TOKENIZER_NAME = "tokenizer.json"


class CheckpointTensors:
    """Native-layout float32 tensors of a safetensors checkpoint (single file or sharded), read on demand."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        single, index = directory / WEIGHTS_NAME, directory / INDEX_NAME
        if single.exists():
            self.files = {name: single for name in self._keys(single)}
        elif index.exists():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            self.files = {name: directory / shard for name, shard in weight_map.items()}
        else:
            raise GGUFExportError(f"{directory}: no {WEIGHTS_NAME} or {INDEX_NAME}")

    @staticmethod
    def _keys(path: Path) -> list[str]:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def __call__(self, name: str) -> torch.Tensor:
        with safe_open(str(self.files[name]), framework="pt") as f:
            t = f.get_tensor(name).to(torch.float32)
        return t.t() if name.endswith(CONV1D_SUFFIXES) else t

    def check_shapes(self, config: BTLMConfig) -> None:
        """Every tensor the config needs is present with its shape (read from the headers only)."""
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in BTLMLMHeadModel(config, init=False).state_dict().items()}
        if config.tie_word_embeddings:
            expected.pop("lm_head.weight")
        expected.pop(gguf_layout.SLOPES_NAME, None)  # optional: a pure function of n_head
        for name, shape in expected.items():
            if name not in self.files:
                raise GGUFExportError(f"{self.directory}: tensor {name!r} is missing")
            with safe_open(str(self.files[name]), framework="pt") as f:
                got = tuple(f.get_slice(name).get_shape())
            if name.endswith(CONV1D_SUFFIXES):
                shape = shape[::-1]  # the file's GPT-2 Conv1D layout
            if got != shape:
                raise GGUFExportError(f"{self.files[name]}: {name} has shape {got}, config.json expects {shape}")


def export_gguf(checkpoint: Path, out: Path, quant: str, tokenizer: Path | None = None) -> Path:
    """Write ``checkpoint`` as a GGUF file at ``out`` in ``quant`` (f32, f16, q8_0, q4_0, q4_k_m).

    ``tokenizer`` defaults to the checkpoint's ``tokenizer.json``. q4_k_m goes through
    llama.cpp's quantizer (an f32 file is written first, beside ``out``, and removed).
    """
    try:
        import gguf  # noqa: F401  (optional: the gguf extra)
    except ImportError:
        raise GGUFExportError("GGUF export needs the gguf package: pip install -e '.[gguf]'") from None
    from model.gguf import quant as gguf_quant  # imports the gguf package

    checkpoint, out = Path(checkpoint), Path(out)
    gguf_quant.check_quant(quant)
    if tokenizer is None:
        tokenizer = checkpoint / TOKENIZER_NAME
        if not tokenizer.exists():
            raise GGUFExportError(f"{checkpoint}: no {TOKENIZER_NAME}; name the tokenizer file (--tokenizer FILE)")
    tokenizer = Path(tokenizer)
    if quant in gguf_quant.NUMPY_QUANTS:
        with atomic_path(out) as tmp:
            write_gguf(checkpoint, tmp, quant, tokenizer)
        return out
    intermediate = temp_path(out.with_name(out.name + ".f32"))
    try:
        write_gguf(checkpoint, intermediate, "f32", tokenizer, pad_multiple=gguf_quant.PAD_MULTIPLE[quant])
        with atomic_path(out) as tmp:
            gguf_quant.llama_quantize(intermediate, tmp, quant)
    finally:
        intermediate.unlink(missing_ok=True)
    return out


def write_gguf(checkpoint: Path, path: Path, quant: str, tokenizer: Path, pad_multiple: int | None = None) -> None:
    """Stream the tensors of ``checkpoint`` into a GGUF file at ``path`` (not atomic: see export_gguf)."""
    import gguf

    from model.gguf import quant as gguf_quant
    from model.gguf import tokenizer as gguf_tokenizer

    if quant not in gguf_quant.NUMPY_QUANTS:
        raise GGUFExportError(f"write_gguf encodes {', '.join(gguf_quant.NUMPY_QUANTS)}; {quant!r} goes through export_gguf")
    try:
        config = BTLMConfig.from_json(checkpoint / CONFIG_NAME)
    except ModelConfigError as exc:
        raise GGUFExportError(str(exc)) from None
    arch = gguf_layout.architecture(config, str(checkpoint / CONFIG_NAME))
    tensors = CheckpointTensors(checkpoint)
    tensors.check_shapes(config)
    max_bias = None
    if arch == gguf_layout.JAIS:
        slopes = (tensors(gguf_layout.SLOPES_NAME) if gguf_layout.SLOPES_NAME in tensors
                  else torch.tensor(alibi_slopes(config.n_head)))
        max_bias = gguf_layout.max_alibi_bias(slopes, config.n_head, str(checkpoint))
    multiple = gguf_quant.PAD_MULTIPLE[quant] if pad_multiple is None else pad_multiple
    n_ff = gguf_layout.padded_size(config.n_inner, multiple)
    specs = gguf_layout.tensor_specs(config, arch, tensors, n_ff)

    writer = gguf.GGUFWriter(str(path), arch)
    try:
        writer.add_name(checkpoint.resolve().name)
        writer.add_file_type(int(gguf_quant.FILE_TYPE[quant]))
        if quant not in ("f32", "f16"):
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        gguf_layout.add_hyperparameters(writer, config, arch, n_ff, max_bias)
        gguf_tokenizer.add_tokenizer(writer, tokenizer, config.vocab_size, config.bos_token_id, config.eos_token_id)
        types = [gguf_quant.tensor_type(quant, spec.shape) for spec in specs]
        for spec, qtype in zip(specs, types):  # header first: the tensor table needs only shapes and types
            writer.add_tensor_info(spec.name, spec.shape, np.dtype(np.float32),
                                   gguf_quant.encoded_nbytes(spec.shape, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for spec, qtype in zip(specs, types):
            values = spec.load()
            assert values.shape == spec.shape, (spec.name, values.shape, spec.shape)
            writer.write_tensor_data(gguf_quant.encode(values, qtype))
    finally:
        writer.close()
