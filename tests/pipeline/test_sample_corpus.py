"""The sample corpus builder: real text from this machine, deterministic, capped, readable."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from common.config import load_config
from pipeline.corpus_io import Document, read_corpus
from pipeline.sample import SampleConfig, format_table, run
from pipeline.sample.__main__ import main
from pipeline.sample.find import Candidate, family_key, glob_regex, order_candidates, tail_key
from pipeline.sample.render import _strip_roff, render_info, render_man

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "data" / "sample.yaml"
SOURCES = {"code", "licenses", "manpages", "docs"}


def tiny_config(output: Path, total: int = 400_000) -> SampleConfig:
    return load_config(SampleConfig, CONFIG, [f"output={output}", f"max_total_bytes={total}", "chunk_bytes=60000"])


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "corpus"
    cfg = tiny_config(out)
    manifest = run(cfg)
    return cfg, out, manifest, snapshot(out)


def test_layout_is_slimpajama_shaped(built):
    _, out, manifest, files = built
    assert set(manifest["sources"]) == SOURCES
    for name in files:
        if name == "manifest.json":
            continue
        folder, chunk = name.split("/")
        assert folder in SOURCES and chunk.startswith("chunk-") and chunk.endswith(".jsonl.zst")
    assert not out.with_name(out.name + ".partial").exists()


def test_every_source_has_real_documents(built):
    _, _, manifest, _ = built
    for name, s in manifest["sources"].items():
        if s["candidates"]:
            assert s["documents"] > 0, name
    assert manifest["sources"]["code"]["documents"] > 10


def test_manifest_counts_match_what_corpus_io_reads(built):
    cfg, out, manifest, _ = built
    docs: dict[str, list[Document]] = {}
    for item in read_corpus(out):
        assert isinstance(item, Document), item
        docs.setdefault(item.folder, []).append(item)
    for name, s in manifest["sources"].items():
        got = docs.get(name, [])
        assert s["documents"] == len(got)
        assert s["bytes"] == sum(len(d.text.encode("utf-8")) for d in got)
        assert s["bytes"] <= s["budget"] == int(cfg.max_total_bytes * cfg.sources[name].share)
        assert s["chunks"] == sorted(p.name for p in (out / name).glob("*.jsonl.zst"))
    total = manifest["total"]
    assert total["documents"] == sum(len(v) for v in docs.values())
    assert total["bytes"] <= cfg.max_total_bytes


def test_records_carry_source_and_relative_origin(built):
    cfg, out, _, _ = built
    origins = set()
    for doc in read_corpus(out):
        meta = doc.record["meta"]
        assert set(doc.record) == {"text", "meta"} and set(meta) == {"source", "origin"}
        assert meta["source"] == doc.folder == doc.source
        root, _, rest = meta["origin"].partition("/")
        assert root in cfg.input and rest and not rest.startswith("/")
        assert not meta["origin"].endswith(".gz")
        assert len(doc.text.encode("utf-8")) <= cfg.max_doc_bytes and doc.text.strip()
        origins.add(meta["origin"])
    assert len(origins) == sum(1 for _ in read_corpus(out)), "a file became two documents"


def test_manifest_has_no_machine_paths_or_times(built):
    _, out, manifest, files = built
    text = files["manifest.json"].decode()
    assert json.loads(text) == manifest
    for placeholder in ("{stdlib}", "{purelib}"):
        assert placeholder in text  # roots are recorded as configured, not resolved
    assert "time" not in text.lower().replace("runtime", "")
    assert manifest["kind"] == "sample-corpus"


@pytest.mark.slow
def test_rebuild_is_byte_identical(built):
    cfg, out, _, first = built
    run(cfg)  # replaces the earlier build in place
    assert snapshot(out) == first


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("not a corpus")
    with pytest.raises(SystemExit, match="not replacing"):
        run(tiny_config(out, total=10_000))
    assert (out / "notes.txt").read_text() == "not a corpus"


def test_cli_prints_per_source_table(tmp_path, capsys):
    out = tmp_path / "cli"
    main(["--config", str(CONFIG), f"output={out}", "max_total_bytes=20000", "sources.manpages.share=0"])
    printed = capsys.readouterr().out
    assert (out / "manifest.json").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "manpages" not in manifest["sources"]
    assert printed.startswith("source") and "total" in printed
    assert format_table(manifest) in printed


def test_config_rejects_bad_shares(tmp_path):
    from common.config import ConfigError

    with pytest.raises(ConfigError, match="more than 1"):
        load_config(SampleConfig, CONFIG, ["sources.code.share=0.9"])
    with pytest.raises(ConfigError, match="not a key of input"):
        load_config(SampleConfig, CONFIG, ["sources.code.include=[{root: nowhere, glob: '*', render: text}]"])


# --- the pieces -----------------------------------------------------------------------


def test_glob_regex():
    assert glob_regex("**/*.py").match("a/b/c.py") and glob_regex("**/*.py").match("c.py")
    assert not glob_regex("*.py").match("a/c.py")
    assert glob_regex("doc/*/copyright").match("doc/bash/copyright")
    assert not glob_regex("doc/*/copyright").match("doc/bash/x/copyright")
    assert glob_regex("man/man[1-8]/*").match("man/man1/ls.1.gz")
    assert not glob_regex("man/man[1-8]/*").match("man/man9/x.9")
    assert glob_regex("**/LICEN[CS]E*").match("pip-1.dist-info/LICENSE.txt")
    assert not glob_regex("**/LICEN[CS]E*").match("x/LICENSEE/other")


def test_vendored_copies_share_a_tail_key():
    assert tail_key("site-packages/pip/_vendor/packaging/version.py") == tail_key(
        "site-packages/packaging/version.py"
    )
    assert tail_key("site-packages/setuptools/_distutils/core.py") == tail_key("stdlib/distutils/core.py")
    assert tail_key("share/doc/bash/changelog.Debian.gz") == "bash/changelog.debian"
    assert family_key("share/man/man1/git-commit.1.gz") == "git"
    assert family_key("share/info/find.info-2.gz") == "find"


def test_ordering_groups_copies_and_round_robins_families():
    def cands(*origins: str) -> list[Candidate]:
        return [Candidate(o, Path(o), "text") for o in sorted(origins)]

    by_tail = order_candidates(
        cands("s/a/x.py", "s/b/y.py", "s/v/_vendor/a/x.py", "s/c/z.py", "s/d/w.py"), "by_tail", seed=0
    )
    pos = [c.origin for c in by_tail]
    assert abs(pos.index("s/a/x.py") - pos.index("s/v/_vendor/a/x.py")) == 1
    assert order_candidates(list(reversed(by_tail)), "by_tail", 0) == by_tail  # input order is irrelevant

    fams = cands(*[f"m/gcloud-{i}.1" for i in range(10)], "m/ls.1", "m/cp.1", "m/git-a.1", "m/git-b.1")
    first_round = {family_key(c.origin) for c in order_candidates(fams, "by_family", 0)[:4]}
    assert first_round == {"gcloud", "ls", "cp", "git"}


def test_render_info_strips_control_structure(tmp_path):
    info = (
        "This is demo.info, produced by makeinfo.\n\n\x1f\nFile: demo.info,  Node: Top,  Next: Use\n\n"
        "Demo\n****\n\nThe demo tool does one thing.\n\n\x1f\nFile: demo.info,  Node: Use\n\n"
        "* Menu:\n\n\x00\x08[index\x00\x08]\n* demo:   Use.\n\x1f\nTag Table:\nNode: Top\x7f77\n\x1f\nEnd Tag Table\n"
    )
    path = tmp_path / "demo.info.gz"
    path.write_bytes(gzip.compress(info.encode()))
    text = render_info(path, 10_000)
    assert "The demo tool does one thing." in text and "Node: Use" in text
    assert "Tag Table" not in text and "\x1f" not in text and "\x00" not in text and "\x7f" not in text


def test_render_man_gives_plain_text(tmp_path):
    page = (
        '.TH DEMO 1 "2024-01-01" "demo 1.0" "User Commands"\n.SH NAME\ndemo \\- show a '
        "\\fBbold\\fR claim\n.SH DESCRIPTION\n.B demo\nprints text.\n.TP\n\\fB\\-v\\fR\nbe verbose\n"
    )
    path = tmp_path / "demo.1.gz"
    path.write_bytes(gzip.compress(page.encode()))
    text = render_man(path, 10_000)
    assert "demo - show a bold claim" in text
    assert "be verbose" in text and "-v" in text
    assert "\\f" not in text and "\x1b" not in text and "\b" not in text
    # without groff, a rough built-in stripper still gives readable text
    rough = _strip_roff(page)
    assert "demo - show a bold claim" in rough and "be verbose" in rough and "\\f" not in rough
