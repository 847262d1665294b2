"""Dedup quality on a labelled set of real documents, side by side in one run.

    .venv/bin/python bench/dedup_quality.py [--corpus data/sample] [--edited 400] [--out /tmp/dedup_quality]

Labelled pairs (character 13-grams of SlimPajama's cleaned text, exact Jaccard):

* real pairs: every pair of corpus documents with exact Jaccard >= 0.5, found by an
  exhaustive sparse count of shared sampled shingles (1 in 8 shingles, any pair
  sharing enough of them is checked exactly), independent of MinHash;
* edited pairs: copies of real documents with words replaced at random until the
  exact Jaccard with the original falls to a target drawn uniformly in 0.5..1.0,
  added to the corpus as a separate source.

Methods, each run on the same corpus (original + edited copies):

* ours: `pipeline.dedup` with configs/data/slimpajama.yaml (defaults);
* slimpajama: the same job with SlimPajama's configuration: datasketch-legacy hash
  values, 9 bands x 13 rows, no verification, connected components;
* datasketch: `datasketch.MinHashLSH(threshold=0.8)`, documents inserted in id order,
  a document is removed when a query finds an earlier kept document (keep-first).

Metrics: pair recall (both documents of a labelled pair end in one cluster) at
Jaccard >= 0.8, in [0.8, 0.9) and >= 0.9; pairs in [0.5, 0.7) that were merged
(over-merging); removal precision (a removed document has exact Jaccard >= 0.7 with
some document of its cluster).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.normalize import clean_text, normalize_text  # noqa: E402
from pipeline.shingles import shingle_strings  # noqa: E402


def jaccard_sets(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


def real_pairs(cleaned: list[str], min_j: float = 0.5) -> list[tuple[int, int, float]]:
    """All pairs with exact Jaccard >= min_j, by sparse shared-sample counts then exact sets."""
    import scipy.sparse as sp

    from pipeline.shingles import shingle_hashes

    rows, cols = [], []
    sizes = np.zeros(len(cleaned))
    for start in range(0, len(cleaned), 256):
        h, d = shingle_hashes(cleaned[start : start + 256], 13, "char", seed=99)
        for i in range(min(256, len(cleaned) - start)):
            hs = np.unique(h[d == i])
            sizes[start + i] = len(hs)
            sampled = hs[(hs & np.uint64(7)) == 0]
            rows.extend([start + i] * len(sampled))
            cols.extend((sampled >> np.uint64(3)).tolist())
    _, col_ids = np.unique(np.array(cols, dtype=np.uint64), return_inverse=True)
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (np.array(rows), col_ids)), shape=(len(cleaned), col_ids.max() + 1))
    inter = (m @ m.T).tocoo()
    cand = []
    samples = np.asarray(m.sum(axis=1)).ravel()
    for a, b, shared in zip(inter.row, inter.col, inter.data):
        if a >= b:
            continue
        # sampled Jaccard estimate, generous margin before the exact check
        est = shared / max(samples[a] + samples[b] - shared, 1)
        if est >= min_j - 0.2:
            cand.append((int(a), int(b)))
    sets: dict[int, set] = {}
    out = []
    for a, b in cand:
        for x in (a, b):
            if x not in sets:
                sets[x] = set(shingle_strings(cleaned[x], 13))
        j = jaccard_sets(sets[a], sets[b])
        if j >= min_j:
            out.append((a, b, j))
    return out


def edit_copy(text: str, target: float, rng: random.Random) -> tuple[str, float]:
    from tests.pipeline.test_dedup import edit_to_jaccard

    return edit_to_jaccard(text, target, rng)


def write_corpus(root: Path, docs: list[tuple[str, str]]) -> list[str]:
    """docs = [(folder, text)] -> corpus files; returns ledger ids in the same order."""
    import zstandard

    by_folder: dict[str, list[str]] = defaultdict(list)
    ids = []
    for folder, text in docs:
        by_folder[folder].append(text)
        ids.append(f"{folder}/part.jsonl.zst:{len(by_folder[folder])}")
    for folder, texts in by_folder.items():
        data = "".join(json.dumps({"text": t, "meta": {"redpajama_set_name": folder}}) + "\n" for t in texts)
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "part.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(data.encode()))
    return ids


def run_job(corpus: Path, out: Path, overrides: list[str]) -> dict[str, str]:
    """Run pipeline.dedup; returns id -> cluster key (kept id) for candidate documents."""
    import pyarrow.parquet as pq

    from common.config import load_config
    from pipeline.dedup import DedupStageConfig, run

    if out.exists():
        shutil.rmtree(out)
    cfg = load_config(DedupStageConfig, REPO / "configs/data/slimpajama.yaml", [f"input={corpus}", f"output={out}", "run.progress=false", *overrides])
    run(cfg)
    group = {}
    for row in pq.read_table(out / "ledger.parquet", columns=["id", "status", "kept_id"]).to_pylist():
        if row["kept_id"] is not None:
            group[row["id"]] = row["kept_id"]
    return group


def run_datasketch(ids: list[str], cleaned: list[str], short: set[int]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """datasketch.MinHashLSH(threshold=0.8), keep-first. Returns (id -> group, removed -> matched kept ids)."""
    import datasketch

    lsh = datasketch.MinHashLSH(threshold=0.8, num_perm=128)
    group, matches = {}, {}
    for i, (doc_id, text) in enumerate(zip(ids, cleaned)):
        if i in short:
            continue
        m = datasketch.MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingle_strings(text, 13)])
        found = sorted(lsh.query(m))
        if found:
            group[doc_id] = group[found[0]]
            matches[doc_id] = found
        else:
            lsh.insert(doc_id, m)
            group[doc_id] = doc_id
    return group, matches


def score(name, group, pairs, ids, sets_of, removed_with, seconds) -> dict:
    """Recall per band and removal precision of one method."""
    res = {"method": name, "seconds": round(seconds, 1)}
    bands = {">=0.8": (0.8, 1.01), "0.8-0.9": (0.8, 0.9), ">=0.9": (0.9, 1.01), "0.7-0.8": (0.7, 0.8), "0.5-0.7": (0.5, 0.7)}
    for label, (lo, hi) in bands.items():
        sel = [(a, b) for a, b, j in pairs if lo <= j < hi]
        hit = [group.get(ids[a]) is not None and group.get(ids[a]) == group.get(ids[b]) for a, b in sel]
        res[f"pairs {label}"] = len(sel)
        res[f"merged {label}"] = round(float(np.mean(hit)), 4) if hit else None
    good = bad = 0
    for doc, partners in removed_with.items():
        sa = sets_of(doc)
        if any(jaccard_sets(sa, sets_of(p)) >= 0.7 for p in partners[:300]):
            good += 1
        else:
            bad += 1
    res["removed"] = good + bad
    res["precision"] = round(good / max(good + bad, 1), 5)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="data/sample")
    parser.add_argument("--edited", type=int, default=400, help="edited copies of real documents")
    parser.add_argument("--out", default="/tmp/dedup_quality")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pipeline.corpus_io import Document, read_corpus
    from pipeline.kernel import init_ray

    rng = random.Random(args.seed)
    work = Path(args.out)
    originals = [(item.folder, normalize_text(item.text)) for item in read_corpus(args.corpus) if isinstance(item, Document)]
    cleaned0 = [clean_text(t) for _, t in originals]
    t0 = time.time()
    cached = work / f"real_pairs-{len(originals)}.json"
    if cached.exists():  # the exhaustive search takes minutes; same corpus, same pairs
        pairs0 = [tuple(p) for p in json.loads(cached.read_text())]
    else:
        pairs0 = real_pairs(cleaned0)
        work.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(pairs0))
    print(f"{len(originals)} documents, {len(pairs0)} real pairs with Jaccard >= 0.5 ({time.time() - t0:.0f} s)")
    in_pairs = {x for a, b, _ in pairs0 for x in (a, b)}
    pool = [i for i in range(len(originals)) if i not in in_pairs and 1000 <= len(cleaned0[i]) <= 50000]
    chosen = rng.sample(pool, min(args.edited, len(pool)))
    docs = list(originals)
    pairs = list(pairs0)
    for i in chosen:
        target = rng.uniform(0.5, 1.0)
        text, _ = edit_copy(originals[i][1], target, rng)
        docs.append(("edited", text))
        j = jaccard_sets(set(shingle_strings(cleaned0[i], 13)), set(shingle_strings(clean_text(text), 13)))
        pairs.append((i, len(docs) - 1, j))
    corpus = work / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    ids = write_corpus(corpus, docs)
    # ledger ids come out sorted by folder, which is also our keep-first order
    order = sorted(range(len(ids)), key=lambda k: (ids[k].split(":")[0], int(ids[k].split(":")[1])))
    cleaned = [clean_text(t) for _, t in docs]
    short = {k for k, c in enumerate(cleaned) if len(c) < 200}
    # pairs with a document the short rule removes are not dedup's business
    pairs = [(a, b, j) for a, b, j in pairs if a not in short and b not in short]
    cache: dict[str, set] = {}
    index = {doc_id: k for k, doc_id in enumerate(ids)}

    def sets_of(doc_id: str) -> set:
        if doc_id not in cache:
            cache[doc_id] = set(shingle_strings(cleaned[index[doc_id]], 13))
        return cache[doc_id]

    init_ray(2)
    results = []
    for name, overrides in (
        ("ours (default config)", []),
        ("slimpajama 9x13, datasketch-legacy, no verify", ["lsh.bands=9", "lsh.rows=13", "lsh.verify=none", "minhash.scheme=datasketch-legacy"]),
    ):
        start = time.time()
        group = run_job(corpus, work / "out", overrides)
        seconds = time.time() - start
        members = defaultdict(list)
        for doc_id, kept in group.items():
            members[kept].append(doc_id)
        removed_with = {d: [k] + [m for m in members[k] if m not in (d, k)] for d, k in group.items() if d != k}
        results.append(score(name, group, pairs, ids, sets_of, removed_with, seconds))
        print(json.dumps(results[-1]))
        misses = [(ids[a], ids[b], round(j, 3)) for a, b, j in pairs if j >= 0.8 and group.get(ids[a]) != group.get(ids[b])]
        (work / f"misses-{len(results)}.json").write_text(json.dumps(misses[:200], indent=0))
        if len(results) == 1:
            shutil.copytree(work / "out", work / "out-ours", dirs_exist_ok=True)
    start = time.time()
    ordered_ids = [ids[k] for k in order]
    ordered_cleaned = [cleaned[k] for k in order]
    ordered_short = {n for n, k in enumerate(order) if k in short}
    group, matches = run_datasketch(ordered_ids, ordered_cleaned, ordered_short)
    results.append(score("datasketch MinHashLSH(0.8) keep-first", group, pairs, ids, sets_of, matches, time.time() - start))
    print(json.dumps(results[-1]))
    cols = ["method", "pairs >=0.8", "merged >=0.8", "merged 0.8-0.9", "merged >=0.9", "merged 0.7-0.8", "merged 0.5-0.7", "removed", "precision", "seconds"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r.get(c)) for c in cols) + " |")
    (work / "results.json").write_text(json.dumps({"pairs": len(pairs), "real_pairs": len(pairs0), "results": results}, indent=1))


if __name__ == "__main__":
    main()
