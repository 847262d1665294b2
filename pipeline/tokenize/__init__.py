"""``make tokenize``: GPT-2 BPE, train/holdout split, decontamination, packed Arrow shards.

    python -m pipeline.tokenize --config configs/data/tokenize.yaml input=DIR output=DIR

Two steps on the stage kernel (driver.py), the math in pipeline.split,
pipeline.tokenizer and pipeline.packing:

1. encode (encode.py)  per corpus file: split by id hash, raw-text hash, BPE + EOS,
                       a part file of tokens.
2. pack (pack.py)      per (split, length): decontaminate train against the holdout
                       hashes, repeat by source weight, pack, shuffle, write shards.
Then the ``seq<L>/`` folders are published and the stage report (report.py) is written
as ``manifest.json``, last. Shards depend only on the corpus and on the settings outside
``run`` (which say how to compute, not what): any number of workers or batch size gives
byte-identical shards.
"""

from pipeline.tokenize.config import DEFAULT_CONFIG, TokenizeConfig, content_config, split_names
from pipeline.tokenize.driver import run

__all__ = ["DEFAULT_CONFIG", "TokenizeConfig", "content_config", "run", "split_names"]
