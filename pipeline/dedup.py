"""`make dedup`: normalize, filter, exact + MinHash-LSH dedup across sources, as Ray jobs.

    python -m pipeline.dedup [--config configs/data/slimpajama.yaml] [key=value ...]

Sub-stages, each a set of Ray tasks writing files under ``<output>/_work/<stage>/``
(atomically: temporary name, then rename) and a ``DONE`` marker when all are written:

1. prepare     one task per input file: read, normalize, clean once, filter, MinHash
               signatures of the candidates; a per-file document table (parquet),
               signatures (.npy) and exact-hash rows split into hash partitions.
2. exact       one task per partition: identical normalized text -> edges to the
               group's representative (chosen by the keep rule).
3. bands       one task per input file: band keys of exact representatives only,
               split into key partitions.
4. lsh         one task per partition: (band, key) buckets -> candidate pairs ->
               signature estimates (signatures memory-mapped) decide the clear cases.
4b. shingles   (verify=exact) one task per input file: shingle-hash sets of the
               documents in undecided pairs, each computed once.
4c. verify     (verify=exact) one task per partition: exact Jaccard of undecided pairs.
5. components  one task: union-find over all edge partitions (int64 state, one
               partition in memory at a time) -> the kept document per component.
6. write       one task per input file: cleaned corpus chunks, ledger part, counts.
Then the driver joins the ledger parts, writes quarantine, report and, last,
``manifest.json``. A re-run skips finished sub-stages and finished tasks, so a killed
run resumes; every result is sorted by document id, so outputs are identical for any
number of workers.

Documents get dense int64 ids in input order (files sorted, then lines), which is
also the order of their string ids within each file.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
import xxhash

from common.config import stage_cli, to_json
from pipeline.corpus_io import ChunkWriter, Quarantine, Rejected, SourceFile, iter_file, list_source_files
from pipeline.dedup_report import add_row, check_counts, format_table, merge_tables, removed_percent, with_total
from pipeline.filters import FilterConfig, build_filter
from pipeline.minhash import MinHasher
from pipeline.normalize import clean_text, normalize_text

DEFAULT_CONFIG = "configs/data/slimpajama.yaml"
STAGES = ("prepare", "exact", "bands", "lsh", "shingles", "verify", "components", "write")
STATUS_CODES = {"candidate": 0, "filtered": 1, "rejected": 2}
WORK = "_work"


# --- configuration -----------------------------------------------------------------


@dataclass
class NormalizeConfig:
    enabled: bool = True  # ftfy.fix_text(text, normalization="NFC") on every document


@dataclass
class MinHashConfig:
    num_perm: int = 128
    ngram: int = 13
    unit: Literal["char", "word"] = "char"
    seed: int = 1
    scheme: Literal["fast", "datasketch", "datasketch-legacy"] = "fast"


@dataclass
class LSHConfig:
    threshold: float = 0.8
    bands: Optional[int] = None  # bands and rows both null: derived from threshold + weights
    rows: Optional[int] = None
    false_positive_weight: float = 0.002  # 21 x 6 at threshold 0.8 (equal weights: SlimPajama's 9 x 13)
    false_negative_weight: float = 0.998
    verify: Literal["exact", "estimate", "none"] = "exact"
    verify_threshold: float = 0.8  # on the exact Jaccard (verify=exact) or the estimate (verify=estimate)
    estimate_accept: float = 0.9  # verify=exact: estimates this high are accepted without the exact check
    estimate_reject: float = 0.65  # verify=exact: estimates this low are rejected without it
    max_bucket_pairs: int = 64

    def __post_init__(self) -> None:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both lsh.bands and lsh.rows, or neither (then they follow lsh.threshold)")


@dataclass
class DuplicatesConfig:
    exact: bool = True  # drop identical normalized text before MinHash
    near: bool = True  # MinHash-LSH near-duplicates
    keep: Literal["smallest_id", "longest", "source_priority"] = "smallest_id"
    source_priority: list[str] = field(default_factory=list)  # for keep=source_priority, best first


@dataclass
class RunConfig:
    num_cpus: Optional[int] = None  # local Ray CPUs; null = all
    partitions: int = 16  # hash partitions of the exact and LSH shuffles
    batch_docs: int = 512  # documents per signature batch
    chunk_bytes: int = 67108864  # uncompressed bytes per output .jsonl.zst chunk
    progress: bool = True
    keep_work: bool = True  # keep <output>/_work after success (resume + inspection)


@dataclass
class DedupStageConfig:
    input: str = "data/sample"
    output: str = "data/dedup"
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    lsh: LSHConfig = field(default_factory=LSHConfig)
    duplicates: DuplicatesConfig = field(default_factory=DuplicatesConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.lsh.bands is not None and self.lsh.rows is not None and self.lsh.bands * self.lsh.rows > self.minhash.num_perm:
            raise ValueError(f"lsh.bands x lsh.rows = {self.lsh.bands * self.lsh.rows} exceeds minhash.num_perm = {self.minhash.num_perm}")
        if self.run.partitions < 1:
            raise ValueError("run.partitions must be at least 1")


def band_layout(cfg: DedupStageConfig) -> tuple[int, int]:
    from pipeline.lsh import optimal_params

    if cfg.lsh.bands is not None and cfg.lsh.rows is not None:
        return cfg.lsh.bands, cfg.lsh.rows
    return optimal_params(cfg.lsh.threshold, cfg.minhash.num_perm, cfg.lsh.false_positive_weight, cfg.lsh.false_negative_weight)


def hasher(cfg: DedupStageConfig) -> MinHasher:
    m = cfg.minhash
    return MinHasher(num_perm=m.num_perm, ngram=m.ngram, unit=m.unit, seed=m.seed, scheme=m.scheme)


# --- small file helpers ------------------------------------------------------------


def _atomic_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + f".tmp{os.getpid()}")


def save_npy(path: Path, array: np.ndarray) -> None:
    tmp = _atomic_path(path)
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, path)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = _atomic_path(path)
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def save_json(path: Path, data: Any) -> None:
    tmp = _atomic_path(path)
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_parquet(path: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    tmp = _atomic_path(path)
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def _part(p: int) -> str:
    return f"p{p:04d}"


def _file_key(i: int) -> str:
    return f"f{i:06d}"


# --- per-document rank of the keep rule --------------------------------------------


def keep_rank(cfg: DuplicatesConfig, source: str, nbytes: int) -> int:
    """Smaller is preferred; ties go to the smaller document id."""
    if cfg.keep == "longest":
        return -nbytes
    if cfg.keep == "source_priority":
        try:
            return cfg.source_priority.index(source)
        except ValueError:
            return len(cfg.source_priority)
    return 0


# --- 1. prepare ----------------------------------------------------------------------


_HASH_DTYPE = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("rank", "<i8"), ("local", "<i8")])


_PREPARE_COLUMNS = ("id", "line", "source", "bytes", "status", "reason", "text", "record", "raw")
_ROW_GROUP_BYTES = 16 << 20  # text buffered before a parquet row group is written


def _prepare_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("line", pa.int64()),
            ("source", pa.string()),
            ("bytes", pa.int64()),
            ("status", pa.string()),
            ("reason", pa.string()),
            ("text", pa.large_string()),
            ("record", pa.large_string()),
            ("raw", pa.string()),
        ]
    )


class _TableWriter:
    """The per-file document table, streamed to parquet in row groups (bounded memory)."""

    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.path = path
        self.tmp = _atomic_path(path)
        self.schema = _prepare_schema()
        self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        self.cols: dict[str, list] = {k: [] for k in _PREPARE_COLUMNS}
        self.buffered = 0
        self.status: list[int] = []
        self.lines: list[int] = []

    def add(self, id_, line, source, nbytes, status, reason, text, record, raw) -> None:
        for key, value in zip(_PREPARE_COLUMNS, (id_, line, source, nbytes, status, reason, text, record, raw)):
            self.cols[key].append(value)
        self.status.append(STATUS_CODES[status])
        self.lines.append(line)
        self.buffered += nbytes
        if self.buffered >= _ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.cols["id"]:
            self.writer.write_table(pa.table(self.cols, schema=self.schema))
        self.cols = {k: [] for k in _PREPARE_COLUMNS}
        self.buffered = 0

    def close(self) -> None:
        self._flush()
        self.writer.close()
        os.replace(self.tmp, self.path)


def prepare_file(cfg: DedupStageConfig, work: Path, file_no: int, sf: SourceFile) -> dict:
    """Read, normalize, filter and sign one input file; write its document table."""
    out = work / "prepare" / f"{_file_key(file_no)}.parquet"
    if out.exists():
        return json.loads((work / "prepare" / f"{_file_key(file_no)}.json").read_text())
    keep_filter = build_filter(cfg.filters)
    table = _TableWriter(out)
    hashes = []
    signer = _Signer(cfg)
    for local, item in enumerate(iter_file(sf)):
        if isinstance(item, Rejected):
            table.add(item.id, item.line, item.source, item.nbytes, "rejected", item.reason, None, None, item.raw)
            continue
        text = normalize_text(item.text) if cfg.normalize.enabled else item.text
        cleaned = clean_text(text)  # once: the short rule measures it, MinHash shingles it
        reason = keep_filter(text, item.source, cleaned=cleaned)
        nbytes = item.nbytes
        record = dict(item.record)
        record["text"] = None  # the text lives in its own column
        line = int(item.id.rsplit(":", 1)[1])
        status = "filtered" if reason else "candidate"
        table.add(item.id, line, item.source, nbytes, status, reason, text, json.dumps(record, ensure_ascii=False), None)
        if status == "candidate":
            digest = xxhash.xxh3_128_digest(text.encode("utf-8"))
            hi, lo = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")
            hashes.append((hi, lo, keep_rank(cfg.duplicates, item.source, nbytes), local))
            signer.add(local, cleaned)
    n = len(table.status)
    signer.save(work / "prepare" / _file_key(file_no))
    hash_rows = np.array(hashes, dtype=_HASH_DTYPE) if hashes else np.empty(0, dtype=_HASH_DTYPE)
    parts = (hash_rows["hi"] % np.uint64(cfg.run.partitions)).astype(np.int64)
    save_npz(
        work / "prepare" / f"{_file_key(file_no)}.hash.npz",
        **{_part(p): hash_rows[parts == p] for p in range(cfg.run.partitions)},
    )
    ranks = np.zeros(n, dtype=np.int64)
    ranks[hash_rows["local"]] = hash_rows["rank"]
    save_npz(
        work / "prepare" / f"{_file_key(file_no)}.meta.npz",
        status=np.array(table.status, dtype=np.int8),
        rank=ranks,
        line=np.array(table.lines, dtype=np.int64),
    )
    summary = {"file_no": file_no, "docs": n}
    save_json(work / "prepare" / f"{_file_key(file_no)}.json", summary)
    table.close()  # last: the table's presence marks the task done
    return summary


class _Signer:
    """MinHash signatures of a file's candidates, computed in batches as they are read
    (so the cleaned text is made once and never stored)."""

    def __init__(self, cfg: DedupStageConfig):
        self.enabled = cfg.duplicates.near
        self.mh = hasher(cfg)
        self.batch = cfg.run.batch_docs
        self.local: list[int] = []
        self.pending: list[str] = []
        self.sigs: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []

    def add(self, local: int, cleaned: str) -> None:
        if not self.enabled:
            return
        self.local.append(local)
        self.pending.append(cleaned)
        if len(self.pending) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            sig, valid = self.mh.signatures(self.pending)
            self.sigs.append(sig)
            self.valid.append(valid)
            self.pending = []

    def save(self, stem: Path) -> None:
        self._flush()
        k = self.mh.num_perm
        save_npy(Path(f"{stem}.sig.npy"), np.concatenate(self.sigs) if self.sigs else np.empty((0, k), dtype=np.uint32))
        save_npy(Path(f"{stem}.sigvalid.npy"), np.concatenate(self.valid) if self.valid else np.empty(0, dtype=bool))
        save_npy(Path(f"{stem}.siglocal.npy"), np.array(self.local, dtype=np.int64))


# --- 2. exact duplicates ---------------------------------------------------------------


def exact_partition(cfg: DedupStageConfig, work: Path, p: int, offsets: np.ndarray) -> dict:
    out = work / "exact" / f"{_part(p)}.npz"
    if out.exists():
        return _edge_stats(out)
    rows, dense = [], []
    for file_no in range(len(offsets) - 1):
        with np.load(work / "prepare" / f"{_file_key(file_no)}.hash.npz", allow_pickle=False) as z:
            part = z[_part(p)]
        rows.append(part)
        dense.append(part["local"] + offsets[file_no])
    rows_all = np.concatenate(rows) if rows else np.empty(0, dtype=_HASH_DTYPE)
    ids = np.concatenate(dense) if dense else np.empty(0, dtype=np.int64)
    order = np.lexsort((ids, rows_all["rank"], rows_all["lo"], rows_all["hi"]))
    hi, lo, ids = rows_all["hi"][order], rows_all["lo"][order], ids[order]
    new_group = np.ones(len(ids), dtype=bool)
    new_group[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    group = np.cumsum(new_group) - 1
    rep = ids[new_group][group]  # first (best-ranked) member of each group
    dup = ~new_group
    edges = np.stack((ids[dup], rep[dup]), axis=1).astype(np.int64)
    nonrep = np.sort(ids[dup]).astype(np.int64)
    save_npz(out, edges=edges, nonrep=nonrep)
    return {"edges": int(len(edges))}


def _edge_stats(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {"edges": int(len(z["edges"]))}


# --- 3. band keys -------------------------------------------------------------------------


def bands_file(cfg: DedupStageConfig, work: Path, file_no: int, offsets: np.ndarray) -> dict:
    """Band keys of one file's exact-duplicate representatives, split into key partitions."""
    from pipeline.lsh import band_keys

    done = work / "bands" / f"{_file_key(file_no)}.npz"
    if done.exists():
        return {}
    lo_id, hi_id = offsets[file_no], offsets[file_no + 1]
    stem = work / "prepare" / _file_key(file_no)
    dense = load_npy(Path(f"{stem}.siglocal.npy")) + lo_id
    use = load_npy(Path(f"{stem}.sigvalid.npy")).copy()
    if cfg.duplicates.exact:  # exact duplicates other than the representative stay out
        for p in range(cfg.run.partitions):
            with np.load(work / "exact" / f"{_part(p)}.npz", allow_pickle=False) as z:
                ids = z["nonrep"]
            ids = ids[(ids >= lo_id) & (ids < hi_id)]
            use &= ~np.isin(dense, ids)
    bands, rows = band_layout(cfg)
    sigs = load_npy(Path(f"{stem}.sig.npy"), mmap=True)
    keys = band_keys(np.asarray(sigs[use]), bands, rows).ravel()  # [docs * bands]
    docs = np.repeat(dense[use], bands).astype(np.uint64)
    parts = (keys % np.uint64(cfg.run.partitions)).astype(np.int64)
    save_npz(done, **{_part(p): np.stack((keys[parts == p], docs[parts == p]), axis=1) for p in range(cfg.run.partitions)})
    return {"documents": int(use.sum())}


# --- 4. LSH buckets and verification -------------------------------------------------------


class SignatureStore:
    """Random access to the signatures of any document, memory-mapped per file."""

    def __init__(self, work: Path, offsets: np.ndarray):
        self.work = work
        self.offsets = offsets
        self._files: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _file(self, file_no: int) -> tuple[np.ndarray, np.ndarray]:
        if file_no not in self._files:
            stem = self.work / "prepare" / _file_key(file_no)
            dense = load_npy(Path(f"{stem}.siglocal.npy")) + self.offsets[file_no]
            self._files[file_no] = (dense, load_npy(Path(f"{stem}.sig.npy"), mmap=True))
        return self._files[file_no]

    def get(self, dense: np.ndarray, num_perm: int) -> np.ndarray:
        out = np.empty((len(dense), num_perm), dtype=np.uint32)
        files = np.searchsorted(self.offsets, dense, side="right") - 1
        for f in np.unique(files):
            sel = np.nonzero(files == f)[0]
            ids, sig = self._file(int(f))
            rows = np.searchsorted(ids, dense[sel])
            order = np.argsort(rows)
            out[sel[order]] = sig[rows[order]]
        return out


def lsh_partition(cfg: DedupStageConfig, work: Path, p: int, offsets: np.ndarray) -> dict:
    from pipeline.lsh import bucket_pairs

    out = work / "lsh" / f"{_part(p)}.npz"
    if out.exists():
        with np.load(out, allow_pickle=False) as z:
            return {}
    parts = []
    for file_no in range(len(offsets) - 1):
        with np.load(work / "bands" / f"{_file_key(file_no)}.npz", allow_pickle=False) as z:
            parts.append(z[_part(p)])
    rows = np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.uint64)
    pairs = bucket_pairs(rows[:, 0], rows[:, 1].astype(np.int64), cfg.lsh.max_bucket_pairs)
    edges = pairs
    unsure = np.empty((0, 2), dtype=np.int64)
    if cfg.lsh.verify != "none" and len(pairs):
        store = SignatureStore(work, offsets)
        estimate = np.zeros(len(pairs))
        step = 1 << 16  # pairs per verification batch bound the gathered signatures
        for start in range(0, len(pairs), step):
            chunk = pairs[start : start + step]
            a = store.get(chunk[:, 0], cfg.minhash.num_perm)
            b = store.get(chunk[:, 1], cfg.minhash.num_perm)
            estimate[start : start + step] = (a == b).mean(axis=1)
        if cfg.lsh.verify == "estimate":
            keep = estimate >= cfg.lsh.verify_threshold
        else:  # exact: decisive estimates decide now, the rest waits for the exact check
            keep = estimate >= cfg.lsh.estimate_accept
            unsure = pairs[~keep & (estimate >= cfg.lsh.estimate_reject)]
        edges = pairs[keep]
    save_npz(out, edges=edges.astype(np.int64), unsure=unsure.astype(np.int64), candidates=np.int64(len(pairs)))
    return {"candidates": int(len(pairs)), "edges": int(len(edges))}


# --- 4b. exact Jaccard of the pairs the estimate could not decide (verify=exact) ----------


def shingles_file(cfg: DedupStageConfig, work: Path, file_no: int, offsets: np.ndarray) -> dict:
    """Sorted unique shingle hashes of this file's documents that an unsure pair needs:
    one flat little-endian uint64 file + per-document bounds, streamed out in chunks of
    documents so the task's memory does not grow with how many documents are unsure."""
    from pipeline.shingles import shingle_hashes

    stem = work / "shingles" / _file_key(file_no)
    done = Path(f"{stem}.ids.npy")
    if done.exists():
        return {}
    lo_id, hi_id = offsets[file_no], offsets[file_no + 1]
    needed = []
    for p in range(cfg.run.partitions):
        with np.load(work / "lsh" / f"{_part(p)}.npz", allow_pickle=False) as z:
            ids = z["unsure"].ravel()
        needed.append(ids[(ids >= lo_id) & (ids < hi_id)])
    ids = np.unique(np.concatenate(needed)) if needed else np.empty(0, dtype=np.int64)
    hashes_path = Path(f"{stem}.hashes.bin")
    partial = _atomic_path(hashes_path)
    bounds = [0]
    texts = _cleaned_texts(work / "prepare" / f"{_file_key(file_no)}.parquet", set((ids - lo_id).tolist()))
    with open(partial, "wb") as sink:
        while chunk := list(itertools.islice(texts, 256)):
            h, doc = shingle_hashes(chunk, cfg.minhash.ngram, cfg.minhash.unit)
            edges = np.searchsorted(doc, np.arange(len(chunk) + 1))
            for k in range(len(chunk)):
                unique = np.unique(h[edges[k] : edges[k + 1]])
                sink.write(unique.astype("<u8", copy=False).tobytes())
                bounds.append(bounds[-1] + len(unique))
    os.replace(partial, hashes_path)
    save_npy(Path(f"{stem}.bounds.npy"), np.array(bounds, dtype=np.int64))
    save_npy(done, ids.astype(np.int64))  # last: marks the task done
    return {"documents": int(len(ids))}


def _cleaned_texts(table: Path, rows: set[int]):
    """Cleaned text of the given rows of a prepared document table, in row order, streamed."""
    import pyarrow.parquet as pq

    if not rows:
        return
    i = 0
    for batch in pq.ParquetFile(table).iter_batches(batch_size=1024, columns=["text"]):
        for text in batch.column(0).to_pylist():
            if i in rows:
                yield clean_text(text)
            i += 1


class ShingleStore:
    """Shingle-hash sets of the documents unsure pairs need, read with positioned reads.

    Nothing is memory-mapped: a verify task holds the two sets it compares, not the
    pages of every file it has touched (which would grow with the number of pairs).
    """

    def __init__(self, work: Path, offsets: np.ndarray):
        self.work, self.offsets = work, offsets
        self._files: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}

    def __enter__(self) -> "ShingleStore":
        return self

    def __exit__(self, *exc) -> None:
        for _, _, fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def get(self, dense: int) -> np.ndarray:
        f = int(np.searchsorted(self.offsets, dense, side="right") - 1)
        if f not in self._files:
            stem = self.work / "shingles" / _file_key(f)
            self._files[f] = (
                load_npy(Path(f"{stem}.ids.npy")),
                load_npy(Path(f"{stem}.bounds.npy")),
                os.open(f"{stem}.hashes.bin", os.O_RDONLY),
            )
        ids, bounds, fd = self._files[f]
        k = int(np.searchsorted(ids, dense))
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        return np.frombuffer(os.pread(fd, 8 * (hi - lo), 8 * lo), dtype="<u8")


def verify_partition(cfg: DedupStageConfig, work: Path, p: int, offsets: np.ndarray) -> dict:
    """Edges of partition p: the decided ones plus unsure pairs with exact Jaccard >= threshold."""
    out = work / "verify" / f"{_part(p)}.npy"
    if out.exists():
        return {}
    with np.load(work / "lsh" / f"{_part(p)}.npz", allow_pickle=False) as z:
        edges, unsure = z["edges"], z["unsure"]
    keep = np.zeros(len(unsure), dtype=bool)
    with ShingleStore(work, offsets) as store:
        for i, (a, b) in enumerate(unsure.tolist()):
            sa, sb = store.get(a), store.get(b)
            inter = len(np.intersect1d(sa, sb, assume_unique=True))
            union = len(sa) + len(sb) - inter
            keep[i] = (inter / union if union else 1.0) >= cfg.lsh.verify_threshold
    save_npy(out, np.concatenate((edges, unsure[keep])).astype(np.int64))
    return {"edges": int(len(edges) + keep.sum())}


# --- 5. connected components -----------------------------------------------------------


def _near_edges(cfg: DedupStageConfig, work: Path, p: int) -> np.ndarray:
    if cfg.lsh.verify == "exact":
        return load_npy(work / "verify" / f"{_part(p)}.npy")
    with np.load(work / "lsh" / f"{_part(p)}.npz", allow_pickle=False) as z:
        return z["edges"]


def components(cfg: DedupStageConfig, work: Path, offsets: np.ndarray) -> dict:
    from pipeline.components import find_roots, keep_per_component, new_forest, union_edges

    out = work / "components" / "kept.npy"
    if out.exists():
        return {}
    n = int(offsets[-1])
    status = np.empty(n, dtype=np.int8)
    rank = np.empty(n, dtype=np.int64)
    for file_no in range(len(offsets) - 1):
        with np.load(work / "prepare" / f"{_file_key(file_no)}.meta.npz", allow_pickle=False) as z:
            status[offsets[file_no] : offsets[file_no + 1]] = z["status"]
            rank[offsets[file_no] : offsets[file_no + 1]] = z["rank"]
    parent = new_forest(n)
    exact_dup = np.zeros(n, dtype=bool)
    for p in range(cfg.run.partitions):
        if cfg.duplicates.exact:
            with np.load(work / "exact" / f"{_part(p)}.npz", allow_pickle=False) as z:
                union_edges(parent, z["edges"])
                exact_dup[z["nonrep"]] = True
        if cfg.duplicates.near:
            union_edges(parent, _near_edges(cfg, work, p))
    roots = find_roots(parent)
    candidates = status == STATUS_CODES["candidate"]
    kept = keep_per_component(roots, candidates, rank)
    # 0 = not a duplicate, 1 = exact duplicate, 2 = near duplicate
    kind = np.zeros(n, dtype=np.int8)
    removed = candidates & (kept != np.arange(n))
    kind[removed & exact_dup] = 1
    kind[removed & ~exact_dup] = 2
    save_npy(work / "components" / "kind.npy", kind)
    save_npy(out, kept)
    return {"removed": int(removed.sum())}


# --- 6. write the cleaned corpus and the ledger part -------------------------------------


def write_file(cfg: DedupStageConfig, work: Path, file_no: int, sf: SourceFile, offsets: np.ndarray, labels: list[str], prefix: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = work / "write" / f"{_file_key(file_no)}.json"
    if done.exists():
        return json.loads(done.read_text())
    lo_id, hi_id = int(offsets[file_no]), int(offsets[file_no + 1])
    kept_all = load_npy(work / "components" / "kept.npy", mmap=True)
    kept = np.array(kept_all[lo_id:hi_id])
    kind = np.array(load_npy(work / "components" / "kind.npy", mmap=True)[lo_id:hi_id])
    lines = _LineLookup(work, offsets, labels)
    ids, sources, nbytes, out_status, out_reason, cluster, kept_id = [], [], [], [], [], [], []
    counts: dict[str, dict[str, int]] = {}
    i = 0
    table = pq.ParquetFile(work / "prepare" / f"{_file_key(file_no)}.parquet")
    with ChunkWriter(Path(cfg.output) / "corpus" / sf.folder, prefix=prefix, max_bytes=cfg.run.chunk_bytes) as writer:
        for batch in table.iter_batches(batch_size=1024):  # one batch of texts in memory at a time
            b = batch.to_pydict()
            for j in range(len(b["id"])):
                st, reason, cid, kid = b["status"][j], b["reason"][j], None, None
                if st == "candidate":
                    k = int(kept[i])
                    cid = k
                    if k == lo_id + i:
                        st, reason, kid = "kept", None, b["id"][j]
                        record = json.loads(b["record"][j])
                        record["text"] = b["text"][j]
                        writer.write(record)
                    else:
                        st, reason, kid = "duplicate", "exact" if kind[i] == 1 else "near", lines.id_of(k)
                ids.append(b["id"][j])
                sources.append(b["source"][j])
                nbytes.append(b["bytes"][j])
                out_status.append(st)
                out_reason.append(reason)
                cluster.append(cid)
                kept_id.append(kid)
                add_row(counts, b["source"][j], b["bytes"][j], st, reason)
                i += 1
    ledger = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "source": pa.array(sources, pa.string()),
            "bytes": pa.array(nbytes, pa.int64()),
            "status": pa.array(out_status, pa.string()),
            "reason": pa.array(out_reason, pa.string()),
            "cluster_id": pa.array(cluster, pa.int64()),
            "kept_id": pa.array(kept_id, pa.string()),
        }
    )
    save_parquet(work / "write" / f"{_file_key(file_no)}.parquet", ledger)
    save_json(done, counts)
    return counts


def chunk_prefixes(files: list[SourceFile]) -> list[str]:
    """Output chunk name prefix per input file: its name without the format suffix
    (sub-folders joined by "__"), or with the suffix kept where that would collide."""

    def stem(sf: SourceFile) -> str:
        name = sf.name
        for suffix in (".jsonl.zst", ".jsonl", ".parquet"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        return name.replace("/", "__")

    stems = [(sf.folder, stem(sf)) for sf in files]
    taken = {key: stems.count(key) for key in set(stems)}
    return [s if taken[(sf.folder, s)] == 1 else sf.name.replace("/", "__").replace(".", "_") for sf, (_, s) in zip(files, stems)]


class _LineLookup:
    """String id of any dense id: '<folder>/<file>:<line>' from the per-file line arrays."""

    def __init__(self, work: Path, offsets: np.ndarray, labels: list[str]):
        self.work, self.offsets, self.labels = work, offsets, labels
        self._lines: dict[int, np.ndarray] = {}

    def id_of(self, dense: int) -> str:
        f = int(np.searchsorted(self.offsets, dense, side="right") - 1)
        if f not in self._lines:
            with np.load(self.work / "prepare" / f"{_file_key(f)}.meta.npz", allow_pickle=False) as z:
                self._lines[f] = z["line"]
        return f"{self.labels[f]}:{int(self._lines[f][dense - self.offsets[f]])}"


# --- driver ------------------------------------------------------------------------------


def _timed(fn: Callable, *args: Any) -> tuple[Any, float]:
    """``fn(*args)`` and the CPU seconds it took in its worker."""
    start = time.process_time()
    result = fn(*args)
    return result, time.process_time() - start


def _run_tasks(name: str, fn: Callable, args_list: list[tuple], progress: bool) -> tuple[list, float]:
    """Run ``fn(*args)`` for every args as Ray tasks; (results in submission order, CPU seconds)."""
    import ray
    from tqdm import tqdm

    remote = ray.remote(num_cpus=1, max_retries=0)(_timed)
    refs = [remote.remote(fn, *args) for args in args_list]
    pending = list(refs)
    with tqdm(total=len(refs), desc=f"dedup {name}", unit="task", disable=not progress, file=sys.stderr) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready)  # raise a task's error here
            bar.update(len(ready))
    done = ray.get(refs)
    return [r for r, _ in done], sum(c for _, c in done)


def _stage_done(work: Path, stage: str) -> bool:
    return (work / stage / "DONE").exists()


def _mark_done(work: Path, stage: str) -> None:
    save_json(work / stage / "DONE", {"stage": stage})


def _prepare_output_dir(cfg: DedupStageConfig, out: Path, work: Path) -> None:
    """Start over if the folder holds a run of a different config or input."""
    config_json = to_json(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, num_cpus=None, progress=True)))
    marker = work / "config.json"
    if marker.exists() and marker.read_text() == config_json:
        return
    if marker.exists():
        print(f"dedup: {out} holds a run with another config; starting over", file=sys.stderr)
    for name in (WORK, "corpus", "ledger.parquet", "report.json", "quarantine.jsonl", "manifest.json"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(config_json)


def run_dedup(cfg: DedupStageConfig, stop_after: str | None = None) -> dict:
    """Run (or resume) the whole stage; returns the report. ``stop_after`` ends the run
    after that sub-stage (used to test resuming)."""
    from pipeline.ray_runtime import init_ray

    out = Path(cfg.output)
    work = out / WORK
    if (out / "manifest.json").exists() and (work / "config.json").exists():
        _prepare_output_dir(cfg, out, work)
        if (out / "manifest.json").exists():
            report = json.loads((out / "report.json").read_text())
            print(format_table(report["sources"]))
            return report
    _prepare_output_dir(cfg, out, work)
    init_ray(cfg.run.num_cpus)
    t0, cpu0 = time.time(), time.process_time()
    files = list_source_files(cfg.input)
    if not files:
        raise FileNotFoundError(f"no corpus files (.jsonl, .jsonl.zst, .parquet) under {cfg.input}")
    labels = [sf.label for sf in files]
    progress = cfg.run.progress
    timings: dict[str, float] = {}

    def stage(name: str, fn: Callable, args_list: list[tuple]) -> list:
        if _stage_done(work, name):
            return []
        start = time.time()
        results, cpu = _run_tasks(name, fn, args_list, progress)
        _mark_done(work, name)
        timings[name] = (time.time() - start, cpu)
        return results

    stage("prepare", prepare_file, [(cfg, work, i, sf) for i, sf in enumerate(files)])
    counts = [json.loads((work / "prepare" / f"{_file_key(i)}.json").read_text())["docs"] for i in range(len(files))]
    offsets = np.zeros(len(files) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if stop_after == "prepare":
        return {}
    parts = range(cfg.run.partitions)
    if cfg.duplicates.exact:
        stage("exact", exact_partition, [(cfg, work, p, offsets) for p in parts])
    if stop_after == "exact":
        return {}
    lsh_stats = []
    if cfg.duplicates.near:
        stage("bands", bands_file, [(cfg, work, i, offsets) for i in range(len(files))])
        if stop_after == "bands":
            return {}
        stage("lsh", lsh_partition, [(cfg, work, p, offsets) for p in parts])
        if cfg.lsh.verify == "exact":
            stage("shingles", shingles_file, [(cfg, work, i, offsets) for i in range(len(files))])
            stage("verify", verify_partition, [(cfg, work, p, offsets) for p in parts])
        for p in parts:
            with np.load(work / "lsh" / f"{_part(p)}.npz", allow_pickle=False) as z:
                lsh_stats.append((int(z["candidates"]), int(len(_near_edges(cfg, work, p)))))
    if stop_after == "lsh":
        return {}
    stage("components", components, [(cfg, work, offsets)])
    if stop_after == "components":
        return {}
    prefixes = chunk_prefixes(files)
    stage("write", write_file, [(cfg, work, i, sf, offsets, labels, prefixes[i]) for i, sf in enumerate(files)])
    if stop_after == "write":
        return {}
    report = _finish(cfg, out, work, files, offsets, lsh_stats, time.time() - t0)
    cpu = sum(c for _, c in timings.values()) + time.process_time() - cpu0
    print("dedup: wall / CPU seconds per sub-stage: " + ", ".join(f"{k} {w:.1f}/{c:.1f}" for k, (w, c) in timings.items()), file=sys.stderr)
    if timings:
        print(f"dedup: {report['total']['bytes_in'] / 1e6 / max(cpu, 1e-9):.2f} MB/s per CPU-second (tasks + driver)", file=sys.stderr)
        save_json(work / "timings.json", {"wall_seconds": time.time() - t0, "cpu_seconds": cpu, "stages": timings, "bytes_in": report["total"]["bytes_in"]})
    return report


def _finish(cfg, out: Path, work: Path, files: list[SourceFile], offsets: np.ndarray, lsh_stats: list, seconds: float) -> dict:
    import pyarrow.parquet as pq

    # Ledger: the per-file parts in input order, one at a time.
    tmp = _atomic_path(out / "ledger.parquet")
    writer = None
    for i in range(len(files)):
        part = pq.read_table(work / "write" / f"{_file_key(i)}.parquet")
        if writer is None:
            writer = pq.ParquetWriter(tmp, part.schema, compression="zstd")
        writer.write_table(part)
    writer.close()
    os.replace(tmp, out / "ledger.parquet")
    # Quarantine: rejected input with file, line, reason and a preview of the bytes.
    tmp = _atomic_path(out / "quarantine.jsonl")
    with Quarantine(tmp) as quarantine:
        for i, sf in enumerate(files):
            t = pq.read_table(work / "prepare" / f"{_file_key(i)}.parquet", columns=["id", "line", "source", "bytes", "status", "reason", "raw"])
            for row in t.filter(t.column("status").to_numpy(zero_copy_only=False) == "rejected").to_pylist():
                quarantine.add(Rejected(row["id"], row["source"], sf.label, row["line"], row["reason"], row["raw"] or "", row["bytes"]))
    os.replace(tmp, out / "quarantine.jsonl")
    table = merge_tables(json.loads((work / "write" / f"{_file_key(i)}.json").read_text()) for i in range(len(files)))
    check_counts(with_total(table))
    report = {
        "sources": table,
        "total": with_total(table)["TOTAL"],
        "removed_percent": {
            source: {"docs": round(removed_percent(c, "docs"), 4), "bytes": round(removed_percent(c, "bytes"), 4)}
            for source, c in with_total(table).items()
        },
        "files": len(files),
        "documents": int(offsets[-1]),
    }
    save_json(out / "report.json", report)
    print(format_table(table))
    mb = report["total"]["bytes_in"] / 1e6
    if lsh_stats:
        bands, rows = band_layout(cfg)
        candidates, verified = sum(c for c, _ in lsh_stats), sum(e for _, e in lsh_stats)
        print(f"dedup: LSH {bands} bands x {rows} rows: {candidates:,} candidate pairs, {verified:,} verified", file=sys.stderr)
    print(f"dedup: {mb:,.1f} MB in {seconds:,.1f} s -> {out}", file=sys.stderr)
    if not cfg.run.keep_work:
        for stage_name in STAGES:
            shutil.rmtree(work / stage_name, ignore_errors=True)
    manifest = {
        "stage": "dedup",
        "input": str(cfg.input),
        "outputs": {"corpus": "corpus", "ledger": "ledger.parquet", "report": "report.json", "quarantine": "quarantine.jsonl"},
        # what was computed; the run section (how) does not change any output
        "config": {k: v for k, v in json.loads(to_json(cfg)).items() if k != "run"},
        "documents": report["documents"],
    }
    save_json(out / "manifest.json", manifest)  # last: marks the stage complete
    return report


def main(argv: list[str] | None = None) -> None:
    cfg, _ = stage_cli(DedupStageConfig, "Normalize, filter and MinHash-LSH deduplicate a corpus.", DEFAULT_CONFIG, argv, prog="python -m pipeline.dedup")
    run_dedup(cfg)


if __name__ == "__main__":
    main()
