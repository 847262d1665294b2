"""transformers' native StableLM folder (``StableLmForCausalLM``, no remote code).

    config.json (model_type stablelm), model.safetensors (or shards + index),
    generation_config.json, tokenizer files

Weights are renamed and split (``c_attn`` -> q/k/v_proj ...) by ``layout.py``,
which also folds the muP multipliers in; ``init_from=`` the folder loads it back.
"""

from __future__ import annotations

from pathlib import Path

from common.atomic import atomic_dir, write_json
from model.checkpoint.folder import write_weights
from model.checkpoint.published import CONFIG_NAME, GENERATION_CONFIG_NAME, generation_config
from model.checkpoint.tokenizer import write_tokenizer_files
from model.network import BTLMLMHeadModel
from model.stablelm.layout import config_to_stablelm, state_to_stablelm, unsupported_reasons


def can_export(model: BTLMLMHeadModel) -> bool:
    return not unsupported_reasons(model.config, model.state_dict())


def export_stablelm(model: BTLMLMHeadModel, out: Path, tokenizer: Path | None,
                    max_shard_bytes: int | None = None) -> list[str]:
    """Write the folder; the file names written."""
    tensors = state_to_stablelm(model.state_dict(), model.config)
    config = config_to_stablelm(model.config)
    dtype = str(next(iter(tensors.values())).dtype).replace("torch.", "")
    config.update(dtype=dtype, torch_dtype=dtype)
    out = Path(out)
    with atomic_dir(out) as tmp:
        write_weights(tmp, tensors, max_shard_bytes)
        if tokenizer is not None:
            write_tokenizer_files(tmp, tokenizer, model.config)
        write_json(tmp / GENERATION_CONFIG_NAME, generation_config(model.config), indent=2)
        write_json(tmp / CONFIG_NAME, config, indent=2)
    return sorted(p.name for p in out.iterdir())
