"""`make tokenize` with the model's own tokenizer and Megatron's indexed dataset, proven
from the other side: megatron-core's own ``IndexedDataset`` opens the .bin/.idx files and
returns, for every document of the sample corpus, exactly the ids the tokenizer gives
(GPT-2 BPE and a second BPE with EOS = 0), in the split and decontamination of the shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from common.config import load_config
from pipeline import split as splitting
from pipeline.corpus_io import Document, read_corpus
from pipeline.shard_format import TOKENIZER_NAME, iter_batches, read_metadata, split_dir
from pipeline.tokenize import TokenizeConfig, run
from pipeline.tokenize.megatron import FOLDER, prefix_name
from pipeline.tokenizer import TOKENIZER_PATH, describe_tokenizer, tokenizer_sha256
from tests.helpers.second_tokenizer import EOS_ID, VOCAB_SIZE, second_tokenizer  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "data" / "tokenize.yaml"
SEQ_LEN = 256
pytestmark = pytest.mark.slow


def tokenize(corpus: Path, output: Path, *overrides: str) -> dict:
    cfg = load_config(TokenizeConfig, CONFIG, [
        f"input={corpus}", f"output={output}", f"pack.seq_lens=[{SEQ_LEN}]", "split.validation_fraction=0.1",
        "run.progress=false", "run.num_cpus=2", *overrides])
    return run(cfg)


def expected_documents(corpus: Path, tokenizer_json: Path, eos_id: int) -> dict[str, list[list[int]]]:
    """Independently recomputed: ids + EOS of every document each split keeps, in corpus order."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.encode_special_tokens = True
    docs = [d for d in read_corpus(corpus) if isinstance(d, Document)]
    split_of = [splitting.assign_split(d.id, 0, 0.1, 0.0) for d in docs]
    holdout = {splitting.text_sha256(d.text) for d, s in zip(docs, split_of) if s != splitting.TRAIN}
    out: dict[str, list[list[int]]] = {"train": [], "validation": []}
    for doc, s in zip(docs, split_of):
        if s == splitting.TRAIN and splitting.text_sha256(doc.text) in holdout:
            continue
        out[splitting.SPLITS[s]].append(tok.encode(doc.text, add_special_tokens=False).ids + [eos_id])
    return out


@pytest.fixture(scope="module", params=["gpt2", "second"])
def tokenized(request, sample_corpus, second_tokenizer, ray_session, tmp_path_factory):  # noqa: F811
    tokenizer = TOKENIZER_PATH if request.param == "gpt2" else second_tokenizer
    out = tmp_path_factory.mktemp(f"tokens-{request.param}")
    override = [] if request.param == "gpt2" else [f"tokenizer={tokenizer}"]
    report = tokenize(sample_corpus, out, "formats=[arrow,megatron]", *override)
    info = describe_tokenizer(tokenizer)
    return {"out": out, "report": report, "tokenizer": tokenizer, "info": info,
            "expected": expected_documents(sample_corpus, tokenizer, info.eos_id)}


@pytest.mark.parametrize("split", ["train", "validation"])
def test_megatron_reader_returns_the_projects_ids_for_every_document(tokenized, split):
    indexed_dataset = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    expected = tokenized["expected"][split]
    dataset = indexed_dataset.IndexedDataset(str(tokenized["out"] / FOLDER / prefix_name(split)))
    assert len(expected) > 0 and len(dataset) == len(expected)
    assert dataset.index.dtype == np.uint16  # the smallest of Megatron's types holding the vocabulary
    assert list(dataset.document_indices) == list(range(len(expected) + 1))  # one sequence per document
    for i, ids in enumerate(expected):
        assert dataset[i].tolist() == ids, f"{split} document {i}"
    listed = tokenized["report"]["megatron"][split]
    assert listed["documents"] == len(expected) and listed["tokens"] == sum(map(len, expected))


@pytest.mark.parametrize("split", ["train", "validation"])
def test_arrow_rows_are_cut_from_the_same_stream(tokenized, split):
    """The shard rows (shuffled) are exactly the Megatron stream cut every SEQ_LEN tokens."""
    stream = np.concatenate([np.array(d) for d in tokenized["expected"][split]])
    rows = len(stream) // SEQ_LEN
    folder = split_dir(tokenized["out"], SEQ_LEN, split)
    table = pa.Table.from_batches([b for p in sorted(folder.glob("shard-*.arrow")) for b in iter_batches(p)])
    got = np.asarray(table.column("input_ids").combine_chunks().flatten()).reshape(-1, SEQ_LEN)
    want = stream[: rows * SEQ_LEN].reshape(rows, SEQ_LEN)
    assert got.shape == want.shape
    assert sorted(map(bytes, got.astype(np.int64))) == sorted(map(bytes, want.astype(np.int64)))


def test_shards_name_their_tokenizer(tokenized):
    info = tokenized["info"]
    for path in tokenized["out"].glob("seq*/*/shard-*.arrow"):
        meta = read_metadata(path)
        assert (meta["eos_id"], meta["vocab_size"]) == (str(info.eos_id), str(info.vocab_size))
        assert meta["tokenizer_sha256"] == tokenizer_sha256(tokenized["tokenizer"])
        assert pa.ipc.open_file(pa.memory_map(str(path))).schema.field("input_ids").type.value_type == pa.uint16()
    beside = tokenized["out"] / TOKENIZER_NAME  # the trainer's checkpoints copy it from here
    assert beside.read_bytes() == Path(tokenized["tokenizer"]).read_bytes()
    report = tokenized["report"]
    assert (report["eos_id"], report["vocab_size"]) == (info.eos_id, info.vocab_size)
    if tokenized["tokenizer"] != TOKENIZER_PATH:
        assert (info.eos_id, info.vocab_size) == (EOS_ID, VOCAB_SIZE)


def test_megatron_files_are_deterministic_and_resumable(tokenized, sample_corpus, tmp_path):
    """Another batch size gives the same bytes; a run killed after encoding finishes the rest."""
    out = tmp_path / "again"
    override = [] if tokenized["tokenizer"] == TOKENIZER_PATH else [f"tokenizer={tokenized['tokenizer']}"]
    tokenize(sample_corpus, out, "formats=[megatron]", "run.batch_docs=17", "run.keep_work=true", *override)
    for name in ("train", "validation"):
        for ext in (".bin", ".idx"):
            a = (tokenized["out"] / FOLDER / (prefix_name(name) + ext)).read_bytes()
            assert (out / FOLDER / (prefix_name(name) + ext)).read_bytes() == a
    assert not list(out.glob("seq*"))  # megatron only: no Arrow shards
    # Resume: what a kill in the middle of the megatron step leaves (no stage manifest, the
    # train split written, validation half-written); the re-run writes only validation,
    # from the kept token parts, to the same bytes.
    step = out / "_work" / "megatron"
    (out / "manifest.json").unlink()
    (out / FOLDER).rename(step / FOLDER)
    for ext in (".bin", ".idx"):
        (step / FOLDER / (prefix_name("validation") + ext)).unlink()
    (step / FOLDER / (prefix_name("validation") + ".bin.123.tmp")).write_bytes(b"partial")
    (step / "validation.done.json").unlink()
    train_written = (step / FOLDER / (prefix_name("train") + ".bin")).stat().st_mtime_ns
    report = tokenize(sample_corpus, out, "formats=[megatron]", *override)
    assert report["input_files_reused"] == report["input_files"]
    for name in ("train", "validation"):
        for ext in (".bin", ".idx"):
            assert (out / FOLDER / (prefix_name(name) + ext)).read_bytes() == \
                (tokenized["out"] / FOLDER / (prefix_name(name) + ext)).read_bytes()
    assert (out / FOLDER / (prefix_name("train") + ".bin")).stat().st_mtime_ns == train_written  # not redone
    assert not list(out.rglob("*.tmp"))


def test_large_vocabulary_gives_uint32_shards_and_int32_megatron_ids(tmp_path, ray_session):
    """A vocabulary past 65,536 ids: uint32 in the shards (read back by the trainer), int32 for Megatron."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from train.data import open_shard_sets

    vocab = {"<|endoftext|>": 0} | {f"w{i}": i for i in range(1, 70_000)} | {"[UNK]": 70_000}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus" / "words"
    corpus.mkdir(parents=True)
    docs = [" ".join(f"w{i}" for i in rng.integers(1, 70_000, size=rng.integers(20, 200))) for _ in range(300)]
    (corpus / "part.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs), encoding="utf-8")
    out = tmp_path / "tokens"
    tokenize(corpus.parent, out, f"tokenizer={tmp_path / 'tokenizer.json'}", "formats=[arrow,megatron]",
             "pack.seq_lens=[64]")
    shards = open_shard_sets(out, [64], ["train", "validation"], eos_id=0, vocab_size=70_001, tokenizer_sha256=None)
    train = shards[(64, "train")]
    assert train.blocks[0].ids.dtype == np.uint32
    assert int(train.tokens(np.arange(len(train))).max()) > 65_535
    indexed_dataset = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    dataset = indexed_dataset.IndexedDataset(str(out / FOLDER / prefix_name("train")))
    assert dataset.index.dtype == np.int32
    validation = indexed_dataset.IndexedDataset(str(out / FOLDER / prefix_name("validation")))
    assert len(dataset) + len(validation) == len(docs)
    ids = np.concatenate([dataset[i] for i in range(len(dataset))])
    assert ids.max() > 65_535 and (ids == 0).sum() == len(dataset)
