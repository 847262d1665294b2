"""GGUF tensor encodings: f32, f16, q8_0 and q4_0 in numpy (the gguf package), Q4_K_M by llama.cpp.

Vectors (LayerNorms, biases) stay f32 in every format, as llama.cpp's own converter and
quantizer keep them. Matrices take the format's type; a matrix whose rows are not a whole
number of 32-value blocks falls back to f16, as llama.cpp's quantizer does (the exporter pads
the SwiGLU dimension so that this does not happen). K-quants (Q4_K_M) have no numpy
encoder: the exporter writes f32 and hands the file to llama.cpp's ``llama_model_quantize``
(the ``llama`` extra, llama-cpp-python).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType
from gguf.quants import quant_shape_to_byte_shape, quantize

from model.gguf.layout import GGUFExportError

QUANTS = ("f32", "f16", "q8_0", "q4_0", "q4_k_m")
NUMPY_QUANTS = ("f32", "f16", "q8_0", "q4_0")

FILE_TYPE = {
    "f32": LlamaFileType.ALL_F32,
    "f16": LlamaFileType.MOSTLY_F16,
    "q8_0": LlamaFileType.MOSTLY_Q8_0,
    "q4_0": LlamaFileType.MOSTLY_Q4_0,
    "q4_k_m": LlamaFileType.MOSTLY_Q4_K_M,
}
MATRIX_TYPE = {
    "f32": GGMLQuantizationType.F32,
    "f16": GGMLQuantizationType.F16,
    "q8_0": GGMLQuantizationType.Q8_0,
    "q4_0": GGMLQuantizationType.Q4_0,
}
# The SwiGLU inner dimension is padded to a multiple of the block size the format needs
# (K-quants group 256 values into a super-block); unquantized formats keep it as trained.
PAD_MULTIPLE = {"f32": 1, "f16": 1, "q8_0": 32, "q4_0": 32, "q4_k_m": 256}


def check_quant(quant: str) -> str:
    if quant not in QUANTS:
        raise GGUFExportError(f"quant {quant!r} is not one of {', '.join(QUANTS)}")
    return quant


def tensor_type(quant: str, shape: tuple[int, ...]) -> GGMLQuantizationType:
    if len(shape) == 1:
        return GGMLQuantizationType.F32
    qtype = MATRIX_TYPE[quant]
    block = GGML_QUANT_SIZES[qtype][0]
    return qtype if shape[-1] % block == 0 else GGMLQuantizationType.F16


def encoded_nbytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    return int(np.prod(quant_shape_to_byte_shape(shape, qtype)))


def encode(values: np.ndarray, qtype: GGMLQuantizationType, rows_per_chunk: int = 1024) -> np.ndarray:
    """``values`` in ``qtype``; block formats are encoded a slice of rows at a time, so the numpy
    encoder's temporaries stay a few MB even for a 50k x 2560 embedding."""
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        return np.ascontiguousarray(quantize(values, qtype))
    out = np.empty(quant_shape_to_byte_shape(values.shape, qtype), dtype=np.uint8)
    rows, out_rows = values.reshape(-1, values.shape[-1]), out.reshape(-1, out.shape[-1])
    for start in range(0, len(rows), rows_per_chunk):
        out_rows[start:start + rows_per_chunk] = quantize(rows[start:start + rows_per_chunk], qtype)
    return out


def llama_quantize(source: Path, target: Path, quant: str) -> None:
    """Re-encode an f32 GGUF file with llama.cpp's quantizer (its standard per-tensor mix)."""
    try:
        import llama_cpp  # optional: the llama extra
    except ImportError:
        raise GGUFExportError(
            f"quant {quant!r} needs llama.cpp's quantizer: pip install -e '.[llama]' "
            "(llama-cpp-python; builds from source, see docs/export.md, 'GGUF and llama.cpp')"
        ) from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(FILE_TYPE[quant])
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if rc != 0:
        raise GGUFExportError(f"llama.cpp's quantizer failed on {source} (return code {rc})")
