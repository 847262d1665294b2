"""The BTLM Hub folder: the published cerebras/btlm-3b-8k-base layout with this project's code.

    config.json                    model_type btlm, auto_map -> configuration_btlm / modeling_btlm
    configuration_btlm.py, modeling_btlm.py, <the project modules they import>.py
    model.safetensors              or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    generation_config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json
    README.md                      a model card with the loading snippet

The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path

import torch

from common.atomic import atomic_dir, write_text
from model.checkpoint.folder import save_pretrained
from model.checkpoint.published import AUTO_MAP, CONFIG_MODULE, MODELING_MODULE
from model.checkpoint.tokenizer import write_tokenizer_files
from model.hub.remote_code import REPO_ROOT, copy_modules
from model.network import BTLMLMHeadModel

# Project modules behind the two remote-code entry files.
ENTRY_MODULES = {"model.hf_transformers.config": CONFIG_MODULE, "model.hf_transformers.modeling": MODELING_MODULE}

MODEL_CARD = """---
library_name: transformers
tags: [btlm, causal-lm, alibi, mup]
---
# {name}

A BTLM-style decoder ({params:,} parameters: {n_layer} layers, width {n_embd}, {n_head} heads,
{positions} positions, {context} tokens of context) exported by `python -m model.export`.
The code that runs it is in this folder:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{name}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{name}")
ids = tokenizer("The history of", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=20)[0]))
# muP parameter groups for continued training
groups = model.get_mup_param_groups(lr=1e-3, weight_decay=0.1)
```
"""


def model_card(model: BTLMLMHeadModel, name: str) -> str:
    c = model.config
    return MODEL_CARD.format(name=name, params=model.num_parameters(), n_layer=c.n_layer, n_embd=c.n_embd,
                             n_head=c.n_head, positions=c.position_embedding_type, context=c.n_positions)


def export_hub(model: BTLMLMHeadModel, out: Path, tokenizer: Path | None, max_shard_bytes: int | None = None,
               source_root: Path = REPO_ROOT) -> list[str]:
    """Write the folder; the file names written. ``source_root`` is where the code is copied from."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        written = copy_modules(ENTRY_MODULES, tmp, source_root)
        if tokenizer is not None:
            written += write_tokenizer_files(tmp, tokenizer, model.config)
        write_text(tmp / "README.md", model_card(model, out.name))
        with torch.no_grad():
            save_pretrained(model, tmp, max_shard_bytes=max_shard_bytes, extra_config={"auto_map": AUTO_MAP})
    return sorted(p.name for p in out.iterdir())
