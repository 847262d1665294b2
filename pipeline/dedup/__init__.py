"""`make dedup`: normalize, filter, exact + MinHash-LSH dedup across sources, as Ray jobs.

    python -m pipeline.dedup [--config configs/data/slimpajama.yaml] [key=value ...]

One module per step, run in this order by driver.py on the stage kernel; steps.py says
what a step is (a name, a task function ``task(cfg, layout, number, ...)`` and the file
or partition numbers it runs over):

1. prepare     per input file: read, normalize, clean once, filter, MinHash signatures
               of the candidates, exact-hash rows split into hash partitions.
2. exact       per partition: identical normalized text -> edges to the group's
               representative (chosen by the keep rule).
3. bands       per input file: band keys of exact representatives, split by key.
4. lsh         per partition: (band, key) buckets -> candidate pairs; signature
   (candidates) estimates decide the clear cases.
4b. shingles   (verify=exact) per input file: shingle sets of the documents in
    (verify)   undecided pairs, computed once.
4c. verify     (verify=exact) per partition: exact Jaccard of undecided pairs.
5. components  (clusters) connected components of the duplicate graph, distributed:
               alternating large-star and small-star rounds over edge partitions
               until a star forest remains -> the document each component keeps.
6. write       per input file: cleaned corpus chunks, ledger part, counts.
Then the ledger, quarantine, report.json (report.py) and, last, manifest.json.
Paths of every file live in layout.py, settings in config.py.
"""

from pipeline.dedup.config import DedupStageConfig, band_layout
from pipeline.dedup.driver import run
from pipeline.dedup.write import chunk_prefixes

__all__ = ["DedupStageConfig", "band_layout", "chunk_prefixes", "run"]
