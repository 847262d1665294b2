"""``make tokenize``: BPE (GPT-2's, or the model's own), train/holdout split,
decontamination, packed Arrow shards and/or Megatron's indexed dataset.

    python -m pipeline.tokenize --config configs/data/tokenize.yaml input=DIR output=DIR \
        [tokenizer=FILE_OR_MODEL_FOLDER] [formats=[arrow,megatron]]

Steps on the stage kernel (driver.py), the math in pipeline.split, pipeline.tokenizer,
pipeline.packing and pipeline.indexed_dataset:

1. encode (encode.py)  per corpus file: split by id hash, raw-text hash, BPE + EOS,
                       a part file of tokens.
2. pack (pack.py)      per (split, length): decontaminate train against the holdout
                       hashes, repeat by source weight, pack, shuffle, write shards.
3. megatron (megatron.py, formats with megatron) per split: the same document stream
                       as megatron/<split>_text_document.bin + .idx.
Then the ``seq<L>/`` and ``megatron/`` folders are published, the tokenizer.json copied
beside them and the stage report (report.py) is written
as ``manifest.json``, last. Shards depend only on the corpus and on the settings outside
``run`` (which say how to compute, not what): any number of workers or batch size gives
byte-identical shards.
"""

from pipeline.tokenize.config import DEFAULT_CONFIG, TokenizeConfig, content_config, split_names
from pipeline.tokenize.driver import run

__all__ = ["DEFAULT_CONFIG", "TokenizeConfig", "content_config", "run", "split_names"]
