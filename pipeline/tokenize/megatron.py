"""Step 3 (``formats: [..., megatron]``), one task per split: the split's documents as
Megatron's indexed dataset, ``megatron/<split>_text_document.bin`` + ``.idx``.

The documents are the very stream the Arrow rows of the split are cut from: the same
split, the same decontamination of train against the holdout, the same repetitions by
source weight, in corpus order, each one sequence ending with the EOS id (Megatron's
``preprocess_data.py --append-eod``). Megatron shuffles and packs them itself."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.indexed_dataset import IndexedDatasetWriter
from pipeline.tokenize.config import TokenizeConfig
from pipeline.tokenize.pack import split_stream
from pipeline.tokenize.staging import local_inputs, local_output

FOLDER = "megatron"


def prefix_name(split: str) -> str:
    """The file prefix of a split, named as Megatron's preprocess_data.py names a JSON key's output."""
    return f"{split}_text_document"


def write_megatron_split(cfg: TokenizeConfig, split: str, parts: list[Path], holdout: frozenset[bytes],
                         folder: Path, vocab_size: int) -> dict[str, Any]:
    """Write ``<folder>/megatron/<split>_text_document.{bin,idx}``; returns what the report lists."""
    with local_inputs(parts) as local_parts, local_output(folder) as local_folder:
        return _write_split(cfg, split, local_parts, holdout, local_folder, vocab_size)


def _write_split(cfg: TokenizeConfig, split: str, parts: list[Path], holdout: frozenset[bytes],
                 folder: Path, vocab_size: int) -> dict[str, Any]:
    start = time.perf_counter()
    out = folder / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    writer = IndexedDatasetWriter(out / prefix_name(split), vocab_size)
    removed: dict[str, dict[str, int]] = {}
    try:
        for ids, lengths, _ in split_stream(cfg, split, parts, holdout, removed):
            writer.add(ids, lengths)
    except BaseException:
        writer.abort()
        raise
    return {"split": split, **writer.close(), "decontamination_removed": dict(sorted(removed.items())),
            "timing": {"megatron_s": time.perf_counter() - start}}
