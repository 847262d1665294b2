"""`make dedup`: normalize, filter, exact + MinHash-LSH dedup across sources, as Ray jobs.

    python -m pipeline.dedup [--config configs/data/slimpajama.yaml] [key=value ...]

One module per step, run in this order by driver.py on the stage kernel; steps.py says
what a step is (a name, a task function ``task(cfg, layout, number, ...)`` and the file
or partition numbers it runs over):

1. prepare     per input file: read, normalize, clean once, filter, MinHash signatures
               of the candidates, exact-hash rows routed to hash partitions.
2. exact       per partition: identical normalized text -> edges to the group's
               representative (chosen by the keep rule).
3. bands       per input file: band keys of exact representatives, routed by key.
4. lsh         per partition: (band, key) buckets -> candidate pairs.
   (candidates)
4a. signatures per file: the signatures of the documents partitions asked for;
    estimate   per partition: signature estimates decide the clear cases.
   (candidates)
4b. shingles   (verify=exact) per file: shingle sets of the documents in undecided
    (verify)   pairs, computed once, sent to the partitions that need them.
4c. verify     (verify=exact) per partition: exact Jaccard of undecided pairs.
5. components  (clusters) connected components of the duplicate graph, distributed:
               alternating large-star and small-star rounds over edge partitions
               until a star forest remains; ranks per file; keep -> the document
               each component keeps.
6. write       per input file: cleaned corpus chunks, ledger part, counts.
Then the ledger, quarantine, report.json (report.py) and, last, manifest.json.
Between steps, rows bound for every task of the next step go through an exchange
(exchange.py: routed files grouped by merge steps). Paths of every file live in
layout.py, settings in config.py.
"""

from pipeline.dedup.config import DedupStageConfig, band_layout
from pipeline.dedup.driver import run
from pipeline.dedup.write import chunk_prefixes

__all__ = ["DedupStageConfig", "band_layout", "chunk_prefixes", "run"]
