"""``make corpus``: the sample corpus, built from real text found on this machine.

    python -m pipeline.sample [--config configs/data/sample.yaml] [key=value ...]

Sources (folder names are part of the demo's contract): ``code`` (Python standard library
and installed packages; vendored copies give real near-duplicates), ``licenses``
(license and Debian copyright files, near-duplicate-rich), ``manpages`` (man and info
pages rendered to plain text) and ``docs`` (READMEs, NEWS, changelogs, package
descriptions). One file is one document. The output is SlimPajama-shaped:
``<output>/<source>/chunk-NNNNN.jsonl.zst`` with records
``{"text": ..., "meta": {"source": <folder>, "origin": "<root name>/<path>"}}``.

Deterministic: files are listed sorted, ordered by a seeded hash and cut by byte caps,
so the same machine and config give a byte-identical corpus. ``manifest.json`` is
written last. Modules: config.py (settings), find.py (which files, in which order),
render.py (a file as text), build.py (the stage on the kernel).
"""

from pipeline.sample.build import format_table, run
from pipeline.sample.config import DEFAULT_CONFIG, SampleConfig

__all__ = ["DEFAULT_CONFIG", "SampleConfig", "format_table", "run"]
