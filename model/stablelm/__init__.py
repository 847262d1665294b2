"""transformers' native StableLM (``StableLmForCausalLM``, no remote code): the project's rotary variant.

- ``layout.py``: config and state dict to / from the native layout, muP multipliers folded in.
- ``export.py``: the folder ``python -m model.export --format hf`` writes for such a model.
"""
