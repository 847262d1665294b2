"""Steps 3 and 4: which matches count, and the policy applied per corpus file.

3. frequency (one task): each evaluation n-gram's corpus document frequency; one in
   more than ``max_corpus_docs`` documents (a licence header, a common phrase) is left
   out; and per item, how many of its n-grams the corpus holds. Arrays the size of
   the evaluation index, whatever the corpus size.
4. apply (per corpus file): a document with at least ``min_ngrams`` distinct counted
   n-grams is contaminated, naming its evaluation items and tasks. ``flag`` keeps it,
   ``remove`` drops it, ``redact`` cuts the matched spans with a window and keeps the
   pieces as documents (GPT-3's rule; too many pieces: dropped whole). A file with
   nothing to change is copied byte for byte; others are written again (jsonl.zst).
   Every document gets a ledger row.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from common.atomic import atomic_path, temp_path
from common.storage import location
from pipeline.corpus_io import Rejected, SourceFile, iter_file
from pipeline.decontaminate.config import DecontaminateConfig
from pipeline.decontaminate.layout import Layout
from pipeline.decontaminate.ngrams import redact
from pipeline.dedup.layout import load_npz, save_npz

LEDGER_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("bytes", pa.int64()),
    ("status", pa.string()),  # clean | contaminated | rejected
    ("action", pa.string()),  # kept | flagged | removed | redacted | dropped (rejected input)
    ("tasks", pa.string()),  # the evaluation tasks matched, comma-separated (rejected: the reason)
    ("items", pa.list_(pa.string())),  # "<task>:<index>" of every matched item
    ("ngrams", pa.int64()),  # distinct counted n-grams matched
    ("pieces", pa.int64()),  # documents written for it
    ("bytes_out", pa.int64()),
])
COUNTS = ("docs_in", "bytes_in", "clean_docs", "contaminated_docs", "flagged_docs", "removed_docs", "redacted_docs",
          "rejected_docs", "docs_out", "bytes_out")


def corpus_frequency(cfg: DecontaminateConfig, layout: Layout, files: int) -> dict:
    grams = len(np.load(layout.grams(), mmap_mode="r"))
    df = np.zeros(grams, dtype=np.int64)
    for f in range(files):
        z = np.load(layout.matches(f), allow_pickle=False)
        pairs = np.unique(np.stack([z["doc"], z["gram"]], axis=1), axis=0)
        df += np.bincount(pairs[:, 1], minlength=grams)
    frequent = df > cfg.ngrams.max_corpus_docs
    offsets, items = load_npz(layout.postings(), "offsets"), load_npz(layout.postings(), "items")
    counted = np.repeat((df > 0) & ~frequent, np.diff(offsets))
    found = np.bincount(items[counted], minlength=pq.read_metadata(layout.items()).num_rows)
    save_npz(layout.frequency(), df=df, frequent=frequent, found=found)
    return {"frequent_in_corpus": int(frequent.sum()), "found": int(((df > 0) & ~frequent).sum())}


class _Writer:
    """The rewritten corpus file: records as JSON lines, zstd-compressed, written atomically."""

    def __init__(self, path: Path):
        self._path, self._tmp = path, temp_path(path)
        self._text = io.TextIOWrapper(zstandard.ZstdCompressor(level=3).stream_writer(open(self._tmp, "wb")),
                                      encoding="utf-8")

    def write(self, record: dict) -> int:
        """Write a record; returns its text's bytes (what the counts measure)."""
        self._text.write(json.dumps(record, ensure_ascii=False) + "\n")
        return len(record["text"].encode("utf-8"))

    def close(self) -> None:
        self._text.close()  # closes the compressor and the file
        self._tmp.replace(self._path)


def output_name(sf: SourceFile) -> str:
    """A rewritten file's name: the input's, as .jsonl.zst."""
    for suffix in (".jsonl.zst", ".jsonl", ".parquet"):
        if sf.name.endswith(suffix):
            return sf.name[: -len(suffix)] + ".jsonl.zst"
    return sf.name


def apply_file(cfg: DecontaminateConfig, layout: Layout, file_no: int, sf: SourceFile) -> dict:
    z = np.load(layout.matches(file_no), allow_pickle=False)
    frequency = np.load(layout.frequency(), allow_pickle=False)
    keep = ~frequency["frequent"][z["gram"]]
    doc, pos, gram = z["doc"][keep], z["pos"][keep], z["gram"][keep]
    offsets, posting = load_npz(layout.postings(), "offsets"), load_npz(layout.postings(), "items")
    items = pq.read_table(layout.items(), columns=["task", "index"]).to_pydict()
    hits = _contaminated(doc, gram, cfg.policy.min_ngrams)
    changes = cfg.policy.action != "flag" and bool(hits)
    out = layout.corpus() / sf.folder / (output_name(sf) if changes else sf.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not changes:  # the file as it is (read through the seam: it may be on an object store)
        location(sf.path).copy_to(location(out))
    writer = _Writer(out) if changes else None
    columns: dict[str, list] = {name: [] for name in LEDGER_SCHEMA.names}
    counts: dict[str, dict[str, int]] = {}
    item_docs: dict[int, int] = {}
    for local, item in enumerate(iter_file(sf)):
        source = item.source
        if isinstance(item, Rejected):
            row = (item.id, source, item.nbytes, "rejected", "dropped", item.reason, [], 0, 0, 0)
        elif local not in hits:
            written = writer.write(item.record) if writer else item.nbytes
            row = (item.id, source, item.nbytes, "clean", "kept", None, [], 0, 1, written)
        else:
            grams = hits[local]
            matched = np.unique(np.concatenate([posting[offsets[g]:offsets[g + 1]] for g in grams]))
            for i in matched.tolist():
                item_docs[i] = item_docs.get(i, 0) + 1
            names = [f"{items['task'][i]}:{items['index'][i]}" for i in matched.tolist()]
            tasks = ",".join(sorted({items["task"][i] for i in matched.tolist()}))
            action, texts = _act(cfg, item.text, np.unique(pos[doc == local]))
            written = sum(writer.write({**item.record, "text": t}) for t in texts) if writer else item.nbytes
            row = (item.id, source, item.nbytes, "contaminated", action, tasks, names, len(grams), len(texts) if writer else 1, written)
        for name, value in zip(LEDGER_SCHEMA.names, row):
            columns[name].append(value)
        _count(counts.setdefault(source, dict.fromkeys(COUNTS, 0)), row)
    if writer:
        writer.close()
    with atomic_path(layout.ledger_part(file_no)) as tmp:
        pq.write_table(pa.table(columns, schema=LEDGER_SCHEMA), tmp, compression="zstd")
    numbers = np.array(sorted(item_docs), dtype=np.int64)
    save_npz(layout.item_docs(file_no), items=numbers, docs=np.array([item_docs[i] for i in numbers.tolist()], dtype=np.int64))
    return counts


def _contaminated(doc: np.ndarray, gram: np.ndarray, min_ngrams: int) -> dict[int, list[int]]:
    """Document -> its distinct counted n-grams, for documents with at least ``min_ngrams``."""
    pairs = np.unique(np.stack([doc, gram], axis=1), axis=0) if len(doc) else np.empty((0, 2), dtype=np.int64)
    out: dict[int, list[int]] = {}
    for d, g in pairs.tolist():
        out.setdefault(d, []).append(g)
    return {d: g for d, g in out.items() if len(g) >= min_ngrams}


def _act(cfg: DecontaminateConfig, text: str, positions: np.ndarray) -> tuple[str, list[str]]:
    """(action, texts written) for a contaminated document."""
    policy = cfg.policy
    if policy.action == "flag":
        return "flagged", [text]
    if policy.action == "remove":
        return "removed", []
    pieces = redact(text, positions, cfg.ngrams.n, policy.window)
    pieces = [p for p in pieces if len(p) >= policy.min_piece_chars]
    if len(pieces) > policy.max_pieces or not pieces:
        return "removed", []
    return "redacted", pieces


def _count(c: dict[str, int], row: tuple) -> None:
    _, _, nbytes, status, action, _, _, _, pieces, written = row
    c["docs_in"] += 1
    c["bytes_in"] += nbytes
    c[f"{status}_docs"] += 1
    if status == "contaminated":
        c[f"{action}_docs"] += 1
    c["docs_out"] += pieces
    c["bytes_out"] += written
