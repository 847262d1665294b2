"""Token shards open in the tools users have: pyarrow, polars, Hugging Face datasets."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.shard_format import split_dir
from tests.pipeline.test_tokenize import SEQ_LENS, tokenize
from tests.pipeline.test_tokenize_data import write_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("readers")
    corpus = write_corpus(root / "corpus", max_files=20)
    tokenize(corpus, root / "tokens")
    folder = split_dir(root / "tokens", SEQ_LENS[0], "train")
    paths = sorted(folder.glob("shard-*.arrow"))
    assert paths
    reference = pa.concat_tables([pa.ipc.open_file(pa.memory_map(str(p))).read_all() for p in paths])
    return paths, reference


def test_pyarrow_reads_rows_and_metadata(shards):
    paths, reference = shards
    with pa.memory_map(str(paths[0])) as source:
        reader = pa.ipc.open_file(source)
        assert reader.schema.metadata[b"seq_len"] == str(SEQ_LENS[0]).encode()
        first = reader.get_batch(0)
    assert len(first.column("input_ids")[0]) == SEQ_LENS[0]
    assert first.column("input_ids")[0].as_py() == reference.column("input_ids")[0].as_py()


def test_polars_reads_a_shard(shards):
    pl = pytest.importorskip("polars")
    paths, reference = shards
    frame = pl.read_ipc(paths[0])
    assert frame.columns == ["input_ids", "doc_starts", "source"]
    assert frame["input_ids"][0].to_list() == reference.column("input_ids")[0].as_py()


def test_datasets_loads_the_shards(shards, tmp_path):
    datasets = pytest.importorskip("datasets")
    paths, reference = shards
    ds = datasets.load_dataset("arrow", data_files=[str(p) for p in paths], split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == reference.num_rows
    assert ds[0]["input_ids"] == reference.column("input_ids")[0].as_py()
    assert ds[0]["source"] == reference.column("source")[0].as_py()
