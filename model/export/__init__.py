"""``python -m model.export CHECKPOINT OUT --format hf|gguf``: a checkpoint for tools outside the project.

- ``hf`` (model/hub/): a Hub-style folder laid out as the published BTLM (config.json with
  ``auto_map``, ``configuration_btlm.py``/``modeling_btlm.py`` and the project modules they
  import, safetensors, tokenizer), loadable with ``trust_remote_code=True`` where only
  transformers and torch are installed; rotary models that transformers' StableLM can
  express are written in its native layout instead (model/stablelm/), no remote code needed.
- ``gguf`` (model/gguf/): a GGUF file for llama.cpp.

Importing this package imports neither transformers nor the GGUF writer.
"""
