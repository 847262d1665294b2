"""Checkpoint folders in the published BTLM layout (needs no transformers).

- ``published.py``: the published names and tensor layout, ``to_published`` / ``from_published``.
- ``folder.py``: saving and loading a folder (single file or shards; BTLM or native StableLM).
- ``tokenizer.py``: the tokenizer files of a folder.
"""
