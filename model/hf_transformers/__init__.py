"""Register the model with transformers' Auto classes: ``import model.hf_transformers``.

After this import ``AutoConfig``, ``AutoModelForCausalLM`` and ``pipeline`` open any
checkpoint of this project (``model_type: btlm``) without ``trust_remote_code``, also
when its config.json carries the published ``auto_map``. transformers stays optional:
``import model`` does not import it.

- ``config.py``: ``BTLMHFConfig`` (``from_project`` / ``to_project``), the exported folder's
  ``configuration_btlm.py``;
- ``modeling.py``: ``BTLMForCausalLM``, the exported folder's ``modeling_btlm.py``.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2TokenizerFast

from model.hf_transformers.config import BTLMHFConfig
from model.hf_transformers.modeling import BTLMForCausalLM

AutoConfig.register(BTLMHFConfig.model_type, BTLMHFConfig, exist_ok=True)
AutoModelForCausalLM.register(BTLMHFConfig, BTLMForCausalLM, exist_ok=True)
try:  # the tokenizer pipeline() loads for the model type: GPT-2 BPE (the folder's tokenizer.json)
    AutoTokenizer.register(BTLMHFConfig, tokenizer_class=GPT2TokenizerFast, exist_ok=True)
except TypeError:  # transformers 4.x
    AutoTokenizer.register(BTLMHFConfig, fast_tokenizer_class=GPT2TokenizerFast, exist_ok=True)

__all__ = ["BTLMForCausalLM", "BTLMHFConfig"]
