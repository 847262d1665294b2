"""The exchange between dedup steps (pipeline/dedup/exchange.py) on a corpus of many
small files: storage requests per step stay within 10 x (files + partitions), where
reading one piece of every file from every partition made files x partitions of them,
and no output byte depends on how the exchange groups its files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.test_dedup import _config, _outputs, real_documents

FILES, PARTITIONS = 200, 256


@pytest.fixture(scope="module")
def many_files(tmp_path_factory) -> Path:
    """200 small JSONL files of real text (windows of standard-library sources), with
    exact copies and edited near-copies spread across files."""
    root = tmp_path_factory.mktemp("many") / "input"
    root.mkdir()
    texts = [t[i : i + 600] for t in real_documents(60) for i in range(0, len(t), 600)]
    rng = np.random.default_rng(0)
    docs = []
    for k in range(FILES * 4):
        text = texts[k % len(texts)]
        if k >= len(texts) and rng.random() < 0.5:  # an edited copy of an earlier window
            words = text.split(" ")
            words[int(rng.integers(len(words)))] = "edited"
            text = " ".join(words)
        docs.append(text)
    for f in range(FILES):
        lines = [json.dumps({"text": t, "meta": {"redpajama_set_name": "code"}}) for t in docs[f * 4 : f * 4 + 4]]
        (root / f"part-{f:04d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def grouped_run(ray_session, many_files, tmp_path_factory) -> tuple[Path, dict]:
    from pipeline import dedup

    out = tmp_path_factory.mktemp("grouped") / "out"
    dedup.run(_config(many_files, out, **{"run.partitions": PARTITIONS, "run.keep_work": "true"}))
    return out, json.loads((out / "_work" / "timings.json").read_text())["requests"]


@pytest.mark.slow
def test_requests_per_step_grow_with_files_plus_partitions(grouped_run):
    out, requests = grouped_run
    budget = 10 * (FILES + PARTITIONS)
    totals = {step: sum(kinds.values()) for step, kinds in requests.items()}
    assert {"exact", "lsh", "verify", "keep", "clusters", "hash-merge1", "bands-merge1"} <= set(totals)
    over = {step: n for step, n in totals.items() if n > budget}
    assert not over, f"steps over 10 x (files + partitions) = {budget}: {over}"
    # each partition task of the exact and lsh steps reads one object: open, offsets, rows
    assert totals["exact"] <= PARTITIONS * 5 and totals["lsh"] <= PARTITIONS * 5
    # today's shape would have been files x partitions loads for each of them
    assert totals["exact"] * 20 < FILES * PARTITIONS
    report = json.loads((out / "report.json").read_text())
    assert report["total"]["exact_docs"] > 0 and report["total"]["near_docs"] > 0


@pytest.mark.slow
def test_outputs_do_not_depend_on_how_the_exchange_groups(grouped_run, many_files, tmp_path):
    """Fan-in 3 (five merge levels), 4 KB reads and 64 KB tasks (destination ranges
    split) with 61 partitions: every published byte the same."""
    from pipeline import dedup

    out, _ = grouped_run
    other = tmp_path / "out"
    dedup.run(_config(many_files, other, **{"run.partitions": 61, "run.merge_fanin": 3,
                                            "run.merge_read_bytes": 4096, "run.merge_task_bytes": 65536,
                                            "run.keep_work": "true"}))
    steps = json.loads((other / "_work" / "timings.json").read_text())["requests"]
    assert "hash-merge5" in steps  # 200 files, 3 at a time
    # sizes are known from the second level on: 64 KB tasks split destination ranges
    assert len(list((other / "_work" / "shingles-merge2").glob("g*.bin"))) > 1
    ours, theirs = _outputs(other), _outputs(out)
    manifests = [json.loads(files.pop("manifest.json")) for files in (ours, theirs)]
    for manifest in manifests:
        manifest["config"].pop("output")  # the one difference: where each run wrote
    assert ours == theirs and manifests[0] == manifests[1]


def test_merge_keeps_every_destinations_rows_in_source_order(tmp_path):
    """The merge itself: random rows of 7 sources routed to 5 destinations, merged with
    fan-in 2, tiny reads and split ranges, read back per destination = the rows of every
    source's piece, in source order."""
    from pipeline.dedup.exchange import Piece, _plan, merge_group, read_piece
    from pipeline.dedup.layout import Layout
    from pipeline.dedup.routed import save_routed

    rng = np.random.default_rng(1)
    dtype = np.dtype(("<i8", (2,)))
    expected = {d: [] for d in range(5)}
    pieces = []
    for s in range(7):
        rows = rng.integers(0, 1000, size=(int(rng.integers(0, 40)), 2))
        dest = rng.integers(0, 5, size=len(rows))
        save_routed(tmp_path / f"s{s}.bin", rows, dest, 5)
        pieces.append(Piece(str(tmp_path / f"s{s}.bin"), 0, 5))
        for d in range(5):
            expected[d].append(rows[dest == d])

    class Run:
        merge_read_bytes = 48  # three rows at a time

    class Cfg:
        run = Run()

    level = 0
    while len({(p.first, p.last) for p in pieces}) < len(pieces):  # until one piece per range
        level += 1
        plan = _plan(pieces, 2, 200)  # sizes known from level 2 on: ranges split
        results = [merge_group(Cfg(), Layout(tmp_path), g, task, 16, str(tmp_path / f"l{level}g{g}.bin"))
                   for g, task in enumerate(plan)]
        pieces = [Piece(str(tmp_path / f"l{level}g{g}.bin"), first, last, r["bytes"])
                  for g, ((_, first, last), r) in enumerate(zip(plan, results))]
    assert level >= 3 and len(pieces) > 1  # merged over levels, destinations split into ranges
    for d in range(5):
        piece = next(p for p in pieces if p.first <= d < p.last)
        np.testing.assert_array_equal(read_piece(piece, d, dtype), np.concatenate(expected[d]))


def test_names_of_kept_documents_reach_the_files_that_asked_for_them(tmp_path):
    """names.py: three files ask two others (an input file and a reference part) for the
    names and index rows of kept documents; after one merge each asking file reads back
    exactly what it asked for, whatever the names' length or script."""
    from pipeline.dedup.config import DedupStageConfig
    from pipeline.dedup.exchange import Piece, merge_group
    from pipeline.dedup.layout import Layout, save_npz
    from pipeline.dedup.names import ASK, NAME_BYTE, kept_documents, name_file
    from pipeline.dedup.routed import row_bytes, save_routed

    offsets = np.array([0, 4, 10, 15, 20])  # file 0: a reference part; 1..3: input files
    layout = Layout(tmp_path, reference_files=1)
    ref_part = tmp_path / "ref.npz"
    save_npz(ref_part, ids=np.array(["earlier/a.jsonl:7", "earlier/b.jsonl:1", "é/ü.jsonl:2", "x"], dtype=str))
    save_npz(layout.meta(1), line=np.arange(6) * 10 + 1, status=np.array([1, 0, 0, 1, 0, 0]))  # 1: filtered
    asks = {2: [(1, 2), (5, 2), (2, 2)], 3: [(5, 3), (0, 3)]}  # asking file -> (kept document, asker)
    for f in (1, 2, 3):
        rows = np.array(asks.get(f, []), dtype=np.int64).reshape(-1, 2)
        save_routed(layout.name_requests(f), rows, np.searchsorted(offsets, rows[:, 0], side="right") - 1, 4)
    asked = Piece(str(tmp_path / "asked.bin"), 0, 4)
    merge_group(DedupStageConfig(), layout, 0, ([Piece(str(layout.name_requests(f)), 0, 4) for f in (1, 2, 3)], 0, 4),
                row_bytes(ASK), str(asked.path))
    for g, name in ((0, str(ref_part)), (1, "label/ö.jsonl")):
        name_file(DedupStageConfig(), layout, g, offsets, name, asked)
    answers = Piece(str(tmp_path / "answers.bin"), 0, 4)
    merge_group(DedupStageConfig(), layout, 0, ([Piece(str(layout.names(g)), 0, 4) for g in (0, 1)], 0, 4),
                row_bytes(NAME_BYTE), str(answers.path))
    # (name, index row): a reference document has none here; document 5, file 1's second, is its first candidate
    assert kept_documents(2, answers) == {1: ("earlier/b.jsonl:1", -1), 2: ("é/ü.jsonl:2", -1),
                                          5: ("label/ö.jsonl:11", 0)}
    assert kept_documents(3, answers) == {5: ("label/ö.jsonl:11", 0), 0: ("earlier/a.jsonl:7", -1)}
    assert kept_documents(1, answers) == {} and kept_documents(1, None) == {}
