"""End-to-end tests of `make dedup` (pipeline.dedup) on small corpora of real text.

The corpora are built from the Python standard library's own source files (present
wherever the tests run), written in SlimPajama's layout, with planted exact
duplicates across sources, near-duplicates made by editing real documents to a
known Jaccard similarity, short documents and bad records.
"""

from __future__ import annotations

import json
import random
import sysconfig
from pathlib import Path

import pytest
import zstandard

from pipeline.normalize import clean_text
from pipeline.shingles import exact_jaccard
from tests.helpers.interrupt import interrupted_after


def real_documents(count: int, min_chars: int = 1500, max_chars: int = 12000, skip: int = 0) -> list[str]:
    """Distinct real texts: standard-library modules of moderate size, in sorted order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out, seen = [], set()
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not min_chars <= len(text) <= max_chars or text in seen:
            continue
        seen.add(text)
        out.append(text)
    assert len(out) >= skip + count, f"only {len(out)} standard-library files of the right size"
    return out[skip : skip + count]


def edit_to_jaccard(text: str, target: float, rng: random.Random, n: int = 13) -> tuple[str, float]:
    """An edited copy of ``text`` whose character n-gram Jaccard with it is just above
    ``target``: words at random positions are replaced, as few as needed."""
    words = text.split(" ")
    positions = list(range(len(words)))
    rng.shuffle(positions)
    base = clean_text(text)

    def edited(k: int) -> str:
        w = list(words)
        for p in positions[:k]:
            w[p] = f"zq{rng.randrange(10**6)}x"
        return " ".join(w)

    lo, hi = 0, len(words)  # find the largest k with jaccard >= target
    best = (text, 1.0)
    state = rng.getstate()
    while lo <= hi:
        mid = (lo + hi) // 2
        rng.setstate(state)
        cand = edited(mid)
        j = exact_jaccard(base, clean_text(cand), n)
        if j >= target:
            best, lo = (cand, j), mid + 1
        else:
            hi = mid - 1
    return best


def write_jsonl_zst(path: Path, records: list, raw_lines: list[bytes] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join((json.dumps(r) + "\n").encode() for r in records) + b"".join(raw_lines)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))


def build_corpus(root: Path, seed: int = 0) -> dict:
    """Two sources of real documents with planted duplicates; returns what was planted."""
    rng = random.Random(seed)
    docs = real_documents(40)
    rec = lambda text, src: {"text": text, "meta": {"redpajama_set_name": src}}
    alpha = [rec(t, "RedPajamaAlpha") for t in docs[:20]]
    beta = [rec(t, "RedPajamaBeta") for t in docs[20:]]
    planted = {"exact": [], "near": [], "far": []}
    # exact duplicate of alpha[0] in beta, and a second copy inside alpha
    beta.append(rec(docs[0], "RedPajamaBeta"))
    alpha.append(rec(docs[0], "RedPajamaAlpha"))
    planted["exact"].append(("alpha/a.jsonl.zst:1", "beta/b.jsonl.zst:21", "alpha/a.jsonl.zst:21"))
    # near duplicates of alpha docs at Jaccard ~0.9 and ~0.85, far ones at ~0.4
    for k, target in ((1, 0.9), (2, 0.85), (3, 0.9)):
        text, j = edit_to_jaccard(docs[k], target, rng)
        beta.append(rec(text, "RedPajamaBeta"))
        planted["near"].append((f"alpha/a.jsonl.zst:{k + 1}", f"beta/b.jsonl.zst:{len(beta)}", j))
    for k in (4, 5):
        text, j = edit_to_jaccard(docs[k], 0.4, rng)
        beta.append(rec(text, "RedPajamaBeta"))
        planted["far"].append((f"alpha/a.jsonl.zst:{k + 1}", f"beta/b.jsonl.zst:{len(beta)}", j))
    beta.append(rec("too short to keep", "RedPajamaBeta"))
    write_jsonl_zst(root / "alpha" / "a.jsonl.zst", alpha, [b"{not json\n"])
    write_jsonl_zst(root / "beta" / "b.jsonl.zst", beta)
    return planted


# --- the job -------------------------------------------------------------------------


def _config(inp: Path, out: Path, **overrides):
    from common.config import load_config
    from pipeline.dedup import DedupStageConfig

    items = [f"input={inp}", f"output={out}", "run.progress=false", "run.partitions=4"]
    items += [f"{k}={v}" for k, v in overrides.items()]
    return load_config(DedupStageConfig, "configs/data/slimpajama.yaml", items)


def _outputs(out: Path) -> dict[str, bytes]:
    """Every output file except the work folder, by relative path."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and "_work" not in p.relative_to(out).parts
    }


def _read_corpus_texts(out: Path) -> dict[str, list[dict]]:
    records: dict[str, list[dict]] = {}
    for path in sorted((out / "corpus").rglob("*.jsonl.zst")):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
        records.setdefault(path.parent.name, []).extend(json.loads(line) for line in data.splitlines())
    return records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("corpus")
    return root, build_corpus(root)


@pytest.mark.slow
def test_dedup_end_to_end(ray_session, corpus, tmp_path):
    import pyarrow.parquet as pq

    from pipeline import dedup
    from pipeline.normalize import normalize_text

    root, planted = corpus
    report = dedup.run(_config(root, tmp_path / "out"))
    out = tmp_path / "out"
    ledger = {r["id"]: r for r in pq.read_table(out / "ledger.parquet").to_pylist()}
    # one ledger row per input record (49 lines, one of them bad JSON)
    assert len(ledger) == 49
    assert list(ledger) == sorted(ledger, key=lambda i: (i.split(":")[0], int(i.split(":")[1])))
    # exact duplicates across sources collapse to one document: the smallest id
    first, *copies = planted["exact"][0]
    assert ledger[first]["status"] == "kept"
    for c in copies:
        assert (ledger[c]["status"], ledger[c]["reason"], ledger[c]["kept_id"]) == ("duplicate", "exact", first)
        assert ledger[c]["cluster_id"] == ledger[first]["cluster_id"]
    for original, copy, j in planted["near"]:
        assert ledger[original]["status"] == "kept"
        assert (ledger[copy]["status"], ledger[copy]["reason"], ledger[copy]["kept_id"]) == ("duplicate", "near", original), j
    for original, copy, j in planted["far"]:
        assert ledger[copy]["status"] == "kept", j
    assert ledger["beta/b.jsonl.zst:27"]["reason"] == "short"
    assert ledger["alpha/a.jsonl.zst:22"]["status"] == "rejected"
    # counts add up per source, and agree with the ledger
    for source, c in report["sources"].items():
        rows = [r for r in ledger.values() if r["source"] == source]
        assert c["docs_in"] == len(rows) and c["bytes_in"] == sum(r["bytes"] for r in rows)
        assert c["docs_in"] == sum(c[f"{k}_docs"] for k in ("short", "quality", "exact", "near", "rejected", "kept"))
        assert c["bytes_in"] == sum(c[f"{k}_bytes"] for k in ("short", "quality", "exact", "near", "rejected", "kept"))
        assert c["kept_docs"] == sum(r["status"] == "kept" for r in rows)
    assert json.loads((out / "report.json").read_text())["sources"] == report["sources"]
    # the cleaned corpus: kept records only, in the input layout, text normalized, meta unchanged
    written = _read_corpus_texts(out)
    assert sorted(written) == ["alpha", "beta"]
    kept = [r for r in ledger.values() if r["status"] == "kept"]
    assert sum(len(v) for v in written.values()) == len(kept)
    for rec in written["beta"]:
        assert rec["meta"] == {"redpajama_set_name": "RedPajamaBeta"}
        assert normalize_text(rec["text"]) == rec["text"]
    quarantine = [json.loads(l) for l in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [(q["file"], q["line"]) for q in quarantine] == [("alpha/a.jsonl.zst", 22)]
    assert json.loads((out / "manifest.json").read_text())["stage"] == "dedup"


@pytest.mark.slow
def test_resume_after_interruption_gives_identical_outputs(ray_session, corpus, tmp_path):
    import shutil

    from pipeline import dedup

    root, _ = corpus
    out = tmp_path / "out"
    dedup.run(_config(root, out))
    reference = _outputs(out)
    shutil.rmtree(out)
    # stopped after a sub-stage, then again half-way through a later one
    with interrupted_after("exact"):
        dedup.run(_config(root, out))
    assert not (out / "manifest.json").exists()
    with interrupted_after("bands"):
        dedup.run(_config(root, out))
    bands = out / "_work" / "bands"
    (bands / "DONE").unlink()  # as if killed mid-step:
    next(bands.glob("*.done.json")).unlink()  # one task's output written, its record not
    for done in bands.glob("*.npz"):
        done.with_name(done.name + ".123.tmp").write_bytes(b"partial")  # stray temporaries
    with interrupted_after("write"):
        dedup.run(_config(root, out))
    assert not (out / "manifest.json").exists()
    dedup.run(_config(root, out))
    assert _outputs(out) == reference


@pytest.mark.slow
def test_outputs_do_not_depend_on_partitions_or_batches(ray_session, corpus, tmp_path):
    import shutil

    from pipeline import dedup

    root, _ = corpus
    out = tmp_path / "out"
    dedup.run(_config(root, out, **{"run.partitions": 1, "run.batch_docs": 3}))
    first = _outputs(out)
    shutil.rmtree(out)
    dedup.run(_config(root, out, **{"run.partitions": 7, "run.batch_docs": 1000, "run.chunk_bytes": 1 << 30}))
    assert _outputs(out) == first


@pytest.mark.slow
def test_killed_run_resumes_to_identical_outputs(ray_session, corpus, tmp_path):
    """A real `python -m pipeline.dedup` process interrupted mid-job (after its exact
    stage finished), then re-run: same outputs as an uninterrupted run."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from pipeline import dedup

    root, _ = corpus
    out = tmp_path / "out"
    dedup.run(_config(root, out))
    reference = _outputs(out)
    shutil.rmtree(out)
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    # Ctrl-C raises KeyboardInterrupt even when this test runs in the background (a shell
    # starts background jobs with SIGINT ignored, and children inherit that).
    main = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "sys.argv[0] = 'pipeline.dedup'; runpy.run_module('pipeline.dedup', run_name='__main__')")
    cmd = [sys.executable, "-c", main, f"input={root}", f"output={out}", "run.progress=false", "run.partitions=4", "run.num_cpus=1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "_work" / "exact" / "DONE").exists():
        assert proc.poll() is None, "the job ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the process stops mid-job
    proc.wait(timeout=60)
    assert not (out / "manifest.json").exists()
    dedup.run(_config(root, out))
    assert _outputs(out) == reference


@pytest.mark.slow
def test_keep_rule_source_priority_and_estimate_verification(ray_session, corpus, tmp_path):
    import pyarrow.parquet as pq

    from pipeline import dedup

    root, planted = corpus
    out = tmp_path / "out"
    dedup.run(_config(root, out, **{"duplicates.keep": "source_priority", "duplicates.source_priority": "[RedPajamaBeta]", "lsh.verify": "estimate"}))
    ledger = {r["id"]: r for r in pq.read_table(out / "ledger.parquet").to_pylist()}
    first, beta_copy, alpha_copy = planted["exact"][0]
    assert ledger[beta_copy]["status"] == "kept"  # the preferred source wins the cluster
    assert ledger[first]["kept_id"] == beta_copy and ledger[alpha_copy]["kept_id"] == beta_copy
    for original, copy, _ in planted["near"]:
        assert ledger[copy]["status"] == "kept"
        assert (ledger[original]["status"], ledger[original]["reason"], ledger[original]["kept_id"]) == ("duplicate", "near", copy)


def test_report_columns_add_up_and_mismatch_is_caught():
    from pipeline.dedup.report import add_row, check_counts, format_table, merge_tables, with_total

    a, b = {}, {}
    add_row(a, "web", 300, "kept", None)
    add_row(a, "web", 100, "filtered", "short")
    add_row(a, "web", 50, "filtered", "gopher_quality:min_words")
    add_row(b, "web", 300, "duplicate", "exact")
    add_row(b, "code", 70, "duplicate", "near")
    add_row(b, "code", 9, "rejected", "invalid JSON")
    table = with_total(merge_tables([a, b]))
    check_counts(table)
    t = table["TOTAL"]
    assert (t["docs_in"], t["bytes_in"]) == (6, 829)
    assert [t[f"{k}_docs"] for k in ("short", "quality", "exact", "near", "rejected", "kept")] == [1, 1, 1, 1, 1, 1]
    assert "TOTAL" in format_table(merge_tables([a, b]))
    table["web"]["kept_docs"] += 1
    with pytest.raises(AssertionError, match="web"):
        check_counts(table)


def test_output_chunk_names_never_collide():
    from pipeline.corpus_io import SourceFile
    from pipeline.dedup import chunk_prefixes

    files = [
        SourceFile("web", "a.jsonl", Path("x"), "jsonl"),
        SourceFile("web", "a.jsonl.zst", Path("x"), "jsonl.zst"),
        SourceFile("web", "sub/b.parquet", Path("x"), "parquet"),
        SourceFile("code", "a.jsonl", Path("x"), "jsonl"),
    ]
    assert chunk_prefixes(files) == ["a_jsonl", "a_jsonl_zst", "sub__b", "a"]
