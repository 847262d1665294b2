"""Decontamination against evaluation sets, on real text with planted contamination.

Evaluation items are 150-word passages cut from documents of the sample corpus (those
documents then stand for the benchmark and leave the corpus). Planted into the
corpus: items verbatim, items embedded in a longer real document, and items with 10%
of their words replaced. Every verbatim and embedded item's document must be found,
at least 95% of the edited ones, and on the corpus without them at most 0.1% of
documents (the n-grams of any document flagged there are named).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zstandard

from common.config import load_config
from pipeline.corpus_io import Document, list_source_files, read_corpus
from pipeline.decontaminate import DecontaminateConfig, run
from pipeline.normalize import clean_text
from pipeline.shingles import shingle_strings
from tests.helpers.interrupt import interrupted_after
from tests.helpers.text_edits import replace_words

pytestmark = pytest.mark.slow
ITEM_WORDS, TASK = 150, "planted"


def _write(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    path.write_bytes(zstandard.ZstdCompressor().compress(body))


def build(sample: Path, root: Path) -> dict[str, list[int]]:
    """root/planted.jsonl (field "question"), root/clean (the corpus without the items'
    documents) and root/dirty (clean + planted); returns item numbers per kind, by
    the planted document's line in dirty/planted/part.jsonl.zst."""
    rng = random.Random(5)
    docs = [d for d in read_corpus(sample) if isinstance(d, Document)]
    # licence texts are left in the corpus: their passages are truly shared among licences
    sources = [d for d in docs if len(d.text.split()) >= 900 and d.source != "licenses"][:12]
    corpus = [d for d in docs if d not in sources]
    items = []
    for d in sources:
        words = d.text.split()
        for at in (0.25, 0.6):
            start = int(at * len(words))
            items.append(" ".join(words[start:start + ITEM_WORDS]))
    (root / "planted.jsonl").write_text("".join(json.dumps({"question": t}) + "\n" for t in items))
    rec = lambda text, source: {"text": text, "meta": {"redpajama_set_name": source}}  # noqa: E731
    clean = [rec(d.text, d.source) for d in corpus]
    kinds = {"verbatim": [], "embedded": [], "edited": []}
    planted = []
    for i, item in enumerate(items):
        kind = list(kinds)[i % 3]
        if kind == "embedded":
            host = corpus[(7 * i) % len(corpus)].text
            cut = host.find(" ", len(host) // 2)
            text = host[:cut] + " " + item + host[cut:]
        else:
            text = item if kind == "verbatim" else replace_words(item, 0.10, rng)
        kinds[kind].append(i)
        planted.append(rec(text, "planted"))
    for name in ("clean", "dirty"):
        _write(root / name / "docs" / "part.jsonl.zst", clean)
    _write(root / "dirty" / "planted" / "part.jsonl.zst", planted)
    return kinds


def _config(root: Path, corpus: str, out: str, **overrides) -> DecontaminateConfig:
    items = [f"input={root / corpus}", f"output={root / out}", f"eval_sets=[{root / 'planted.jsonl'}:question]",
             "run.progress=false"] + [f"{k}={v}" for k, v in overrides.items()]
    return load_config(DecontaminateConfig, "configs/data/decontaminate.yaml", items)


def _ledger(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in pq.read_table(out / "ledger.parquet").to_pylist()}


def _texts(folder: Path) -> list[str]:
    return [d.text for d in read_corpus(folder) if isinstance(d, Document)]


def _shared(text: str, items: list[str], n: int = 13) -> set[str]:
    """The n-grams (as words) a text shares with the items."""
    grams = set(shingle_strings(clean_text(text), n, "word"))
    return {g for item in items for g in set(shingle_strings(clean_text(item), n, "word")) & grams}


@pytest.fixture(scope="module")
def planted(sample_corpus, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("decontam")
    return root, build(sample_corpus, root)


def test_planted_items_are_found_and_clean_corpus_is_not_flagged(ray_session, planted):
    root, kinds = planted
    report = run(_config(root, "dirty", "flag"))
    ledger = _ledger(root / "flag")
    found = {}
    for kind, numbers in kinds.items():
        rows = [ledger[f"planted/part.jsonl.zst:{i + 1}"] for i in numbers]
        found[kind] = sum(r["status"] == "contaminated" and f"{TASK}:{i}" in r["items"] for i, r in zip(numbers, rows))
    assert found["verbatim"] == len(kinds["verbatim"]) and found["embedded"] == len(kinds["embedded"])
    assert found["edited"] >= 0.95 * len(kinds["edited"]), found
    assert report["tasks"][TASK]["overlapping"] == len(kinds["verbatim"]) * 3 - (len(kinds["edited"]) - found["edited"])
    print(f"\nplanted found: {found} of {({k: len(v) for k, v in kinds.items()})}")
    # flag keeps every document: the corpus is copied byte for byte
    assert [p.read_bytes() for p in sorted((root / "flag" / "corpus").rglob("*.zst"))] == \
           [p.read_bytes() for p in sorted((root / "dirty").rglob("*.zst"))]

    run(_config(root, "clean", "clean-out"))
    flagged = [r for r in _ledger(root / "clean-out").values() if r["status"] == "contaminated"]
    items = [json.loads(line)["question"] for line in (root / "planted.jsonl").read_text().splitlines()]
    texts = {d.id: d.text for d in read_corpus(root / "clean") if isinstance(d, Document)}
    causes = {r["id"]: sorted(_shared(texts[r["id"]], items))[:3] for r in flagged}
    print(f"clean corpus: {len(flagged)} of {len(texts)} documents flagged; n-grams: {causes}")
    assert len(flagged) <= 0.001 * len(texts), causes


def test_policies_resume_and_counts(ray_session, planted):
    root, kinds = planted
    items = [json.loads(line)["question"] for line in (root / "planted.jsonl").read_text().splitlines()]
    for action in ("remove", "redact"):
        report = run(_config(root, "dirty", action, **{"policy.action": action}))
        ledger = _ledger(root / action)
        for source, c in report["sources"].items():  # counts add up per source, and match the ledger
            rows = [r for r in ledger.values() if r["source"] == source]
            assert c["docs_in"] == len(rows) == c["clean_docs"] + c["contaminated_docs"] + c["rejected_docs"]
            assert c["contaminated_docs"] == c["flagged_docs"] + c["removed_docs"] + c["redacted_docs"]
            assert c["docs_out"] == sum(r["pieces"] for r in rows)
            assert c["contaminated_docs"] == sum(r["status"] == "contaminated" for r in rows)
        assert all(r["tasks"] == TASK for r in ledger.values() if r["status"] == "contaminated")
        out = _texts(root / action / "corpus")
        assert len(out) == report["total"]["docs_out"]
        assert not any(_shared(t, items) for t in out)  # nothing matched is left
        if action == "remove":
            assert report["total"]["removed_docs"] == report["total"]["contaminated_docs"] > 0
        else:  # the embedded items' hosts keep their text around the cut
            assert report["total"]["redacted_docs"] >= len(kinds["embedded"])
            host = ledger[f"planted/part.jsonl.zst:{kinds['embedded'][0] + 1}"]
            assert host["action"] == "redacted" and host["pieces"] == 2

    # resume: a run stopped after the scan finishes to the same outputs as a fresh one
    with interrupted_after("scan"):
        run(_config(root, "dirty", "resumed", **{"policy.action": "redact"}))
    run(_config(root, "dirty", "resumed", **{"policy.action": "redact", "run.batch_docs": 7}))
    for name in ("ledger.parquet", "report.json"):
        assert (root / "resumed" / name).read_bytes() == (root / "redact" / name).read_bytes(), name
    assert [p.read_bytes() for p in sorted((root / "resumed" / "corpus").rglob("*.zst"))] == \
           [p.read_bytes() for p in sorted((root / "redact" / "corpus").rglob("*.zst"))]
    assert [sf.label for sf in list_source_files(root / "redact" / "corpus")] == \
           [sf.label for sf in list_source_files(root / "dirty")]


def test_boilerplate_ngrams_are_left_out_and_counted(ray_session, sample_corpus, tmp_path):
    """A prompt template in every item and a licence line in many corpus documents
    match nothing; the report says how many n-grams each threshold left out."""
    template = "Read the passage below and answer the question that follows using only the information given in it"
    licence = "Licensed under the Apache License Version 2.0 you may not use this file except in compliance with the License"
    texts = [d.text.split() for d in read_corpus(sample_corpus) if isinstance(d, Document)]
    texts = [w for w in texts if len(w) >= 400]
    items = [f"{template} {' '.join(w[100:160])}" for w in texts[:12]]
    items[0] += f" {licence}"
    (tmp_path / "quiz.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in items))
    corpus = [{"text": f"{licence} {' '.join(w[200:400])}"} for w in texts[12:18]] + [{"text": f"{template} {' '.join(texts[18][:200])}"}]
    _write(tmp_path / "corpus" / "docs" / "part.jsonl.zst", corpus)

    def decontaminate(out: str, max_corpus_docs: int) -> dict:
        return run(load_config(DecontaminateConfig, "configs/data/decontaminate.yaml", [
            f"input={tmp_path / 'corpus'}", f"output={tmp_path / out}", f"eval_sets=[{tmp_path / 'quiz.jsonl'}]",
            "run.progress=false", f"ngrams.max_corpus_docs={max_corpus_docs}"]))

    report = decontaminate("strict", 5)
    assert report["ngrams"]["left_out_frequent_in_eval"] == 5  # the template's 17 words: 5 13-grams, in 12 items
    assert report["ngrams"]["left_out_frequent_in_corpus"] == 7  # the licence line's 19 words, in 6 documents
    assert report["total"]["contaminated_docs"] == 0
    report = decontaminate("lenient", 50)  # the licence line then counts: item 0 is in those 6 documents
    assert report["total"]["contaminated_docs"] == 6 and report["tasks"]["quiz"]["overlapping"] == 1


def test_decontaminate_on_s3_gives_the_local_bytes(ray_session, planted, s3_bucket):
    """Input and output on the S3 test server, the work folder on this machine's disk (its
    steps map their files): the local run's objects; a work folder on the store is refused
    with the reason."""
    from tests.pipeline.test_dedup_s3 import store_outputs, upload_tree

    root, _ = planted
    report = run(_config(root, "dirty", "local-remove", **{"policy.action": "remove"}))
    corpus, out = upload_tree(root / "dirty", f"{s3_bucket}/dirty"), f"{s3_bucket}/removed"
    items = [f"input={corpus}", f"output={out}", f"eval_sets=[{root / 'planted.jsonl'}:question]",
             "run.progress=false", "policy.action=remove"]
    assert run(load_config(DecontaminateConfig, "configs/data/decontaminate.yaml", items)) == report
    local = {p.relative_to(root / "local-remove").as_posix(): p.read_bytes()
             for p in sorted((root / "local-remove").rglob("*")) if p.is_file() and "_work" not in p.parts}
    remote = store_outputs(out)
    assert sorted(remote) == sorted(local) and any(name.startswith("corpus/") for name in local)
    assert [name for name in local if remote[name] != local[name]] == ["manifest.json"]  # it names the locations
    assert run(load_config(DecontaminateConfig, "configs/data/decontaminate.yaml", items)) == report  # complete
    with pytest.raises(ValueError, match="work folder .* must be on a local disk"):
        run(load_config(DecontaminateConfig, "configs/data/decontaminate.yaml",
                        [*items, f"output={s3_bucket}/other", "run.work_dir=output"]))
