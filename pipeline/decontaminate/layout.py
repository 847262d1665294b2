"""Where every file of the decontamination stage lives, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.kernel import file_key

# The stage's published outputs (names under <output>).
CORPUS, LEDGER, REPORT, PLOT = "corpus", "ledger.parquet", "report.json", "contamination.png"
OUTPUTS = (CORPUS, LEDGER, REPORT, PLOT)


@dataclass(frozen=True)
class Layout:
    work: Path  # <output>/_work

    # 1. evalsets: the evaluation n-gram index (one task)
    def items(self) -> Path:  # task, index, sha256 and n-gram count of every item (parquet)
        return self.work / "evalsets" / "items.parquet"

    def grams(self) -> Path:  # sorted unique n-gram hashes kept (uint64 .npy, memory-mapped by readers)
        return self.work / "evalsets" / "grams.npy"

    def postings(self) -> Path:  # items of each n-gram: offsets + item numbers (npz)
        return self.work / "evalsets" / "postings.npz"

    # 2. scan: per corpus file, its documents' matched n-grams
    def matches(self, f: int) -> Path:
        return self.work / "scan" / f"{file_key(f)}.npz"

    # 3. frequency: corpus document frequency of each n-gram, and which are left out (one task)
    def frequency(self) -> Path:
        return self.work / "frequency" / "frequency.npz"

    # 4. apply: per corpus file, the output file, its ledger part and its items' document counts
    def corpus(self) -> Path:
        return self.work / "apply" / CORPUS

    def ledger_part(self, f: int) -> Path:
        return self.work / "apply" / "ledger" / f"{file_key(f)}.parquet"

    def item_docs(self, f: int) -> Path:
        return self.work / "apply" / "items" / f"{file_key(f)}.npz"
