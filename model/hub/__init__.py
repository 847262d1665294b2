"""The Hub folder (``python -m model.export --format hf``, BTLM layout): weights in the published layout
plus the project's own modules as remote code, loadable with ``trust_remote_code=True``.

- ``export.py``: ``export_hub``, the folder and its model card.
- ``remote_code.py``: finds the modules the transformers classes import and copies them flat.
"""
