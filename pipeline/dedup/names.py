"""Step 6a: what the write step needs of the kept documents, brought to the files that need it.

A duplicate's ledger row names the document kept in its place (``kept_id``: the
``<label>:<line>`` of an input file's document, or the id a reference index gave it),
and its index row points at that document's row in the kept document's own index part
(its rank among its file's candidates). Only the kept document's own file knows either,
and a file's duplicates point into any file, so instead of each write task reading the
metadata of every file holding a kept copy (files x files reads on a crawl whose copies
spread everywhere), the answers travel through the exchange like every other row:

- clusters (per input file) asks: (kept document, asking file), routed to the kept
  document's file (``Layout.name_requests``);
- names (per file) answers: for each asking file one segment of bytes -- the count of
  answers, (kept document, bytes of its name, its index row) for each, then the names'
  UTF-8 bytes -- routed back to it (one routed file of bytes: the exchange concatenates
  a file's segments, each readable on its own);
- write (per input file) reads its one piece: ``kept_documents``.
"""

from __future__ import annotations

import numpy as np

from common.storage import location
from pipeline.dedup.config import DedupStageConfig
from pipeline.dedup.exchange import Piece, read_piece
from pipeline.dedup.layout import Layout, load_npz, open_npz
from pipeline.dedup.prepare import STATUS_CODES
from pipeline.dedup.routed import write_routed

ASK = np.dtype(("<i8", (2,)))  # (kept document, the file that asks for its name)
NAME_BYTE = np.dtype("u1")  # the answers travel as bytes: segments of names of any length


def name_file(cfg: DedupStageConfig, layout: Layout, g: int, offsets: np.ndarray, name: str,
              asked: Piece | None) -> dict:
    """Answer the requests for file g's documents. ``name``: the file's label (an input
    file) or its index part (a reference file: its documents keep their ids, and have no
    row in the index this run writes)."""
    rows = read_piece(asked, g, ASK)
    local = rows[:, 0] - offsets[g]
    if not len(rows):  # nobody asked: no metadata to read
        names, index_rows = [], np.empty(0, dtype=np.int64)
    elif g < layout.reference_files:
        names, index_rows = [str(i) for i in load_npz(location(name, cfg.storage), "ids")[local]], np.full(len(rows), -1)
    else:
        with open_npz(layout.meta(g)) as meta:
            line, candidate = meta["line"], meta["status"] == STATUS_CODES["candidate"]
        names, index_rows = [f"{name}:{int(line[i])}" for i in local], (np.cumsum(candidate) - 1)[local]
    encoded = [n.encode("utf-8") for n in names]
    to, files = rows[:, 1], len(offsets) - 1
    order = np.argsort(to, kind="stable")
    bounds = np.searchsorted(to[order], np.arange(files + 1))
    segments, lengths = [], np.zeros(files, dtype=np.int64)
    for f in np.flatnonzero(np.diff(bounds)):
        idx = order[bounds[f] : bounds[f + 1]]
        head = np.stack((rows[idx, 0], [len(encoded[i]) for i in idx], index_rows[idx]), axis=1).astype("<i8")
        segments.append(np.array([len(idx)], dtype="<i8").tobytes() + head.tobytes() + b"".join(encoded[i] for i in idx))
        lengths[f] = len(segments[-1])
    ends = np.zeros(files + 1, dtype=np.int64)
    np.cumsum(lengths, out=ends[1:])
    write_routed(layout.names(g), ends, NAME_BYTE.itemsize, segments)
    return {"names": int(len(rows))}


def kept_documents(f: int, answers: Piece | None) -> dict[int, tuple[str, int]]:
    """Kept document -> (its name, its index row), for every kept document file f's
    duplicates point at."""
    raw = read_piece(answers, f, NAME_BYTE, writable=False).tobytes()
    kept, pos = {}, 0
    while pos < len(raw):  # one segment per answering file
        n = int(np.frombuffer(raw, dtype="<i8", count=1, offset=pos)[0])
        head = np.frombuffer(raw, dtype="<i8", count=3 * n, offset=pos + 8).reshape(n, 3)
        pos += 8 + 24 * n
        for doc, size, row in head.tolist():
            kept[doc] = (raw[pos : pos + size].decode("utf-8"), row)
            pos += size
    return kept
