"""GGUF files for llama.cpp (the ``gguf`` extra): BTLM as its ``jais`` graph, the rotary variant as ``stablelm``.

- ``layout.py``: how a project model maps onto llama.cpp's graphs (``tensor_specs``: to GGUF).
- ``export.py``: ``export_gguf``, streaming a checkpoint's tensors into one file.
- ``read.py``: ``model_from_gguf``, a file back as the model llama.cpp runs (from GGUF).
- ``quant.py``, ``tokenizer.py``: tensor encodings and the embedded tokenizer.

Importing this package imports nothing of the gguf package.
"""
