"""The shard loader: contract checks, deterministic order, rank slices, resume positions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.shard_format import split_dir
from tests.helpers.train_support import EOS, TOKENIZER_SHA, VOCAB, pack, real_documents, write_split
from train.data import PhaseStream, ShardError, ShardSet, TrainBatches, expected_metadata, open_shard_sets


@pytest.fixture(scope="module")
def docs():
    return real_documents()


def open_set(root, seq_len=64, split="train", sha=TOKENIZER_SHA):
    return ShardSet(root, seq_len, split, expected_metadata(EOS, sha))


def test_rows_round_trip_from_memory_map(tmp_path, docs):
    n = write_split(tmp_path, 64, "train", docs, rows_per_shard=7)
    shards = open_set(tmp_path)
    ids, starts = pack(docs, 64)
    assert len(shards) == n == len(ids)
    rows = np.array([0, 6, 7, 13, n - 1])
    assert np.array_equal(shards.tokens(rows), ids[rows].astype(np.int64))
    # the token arrays are views of the memory map, not copies
    assert not shards.blocks[0].ids.flags.owndata
    # segment ids step up exactly at each document start inside the row
    seg = shards.segment_ids(rows)
    for out, r in zip(seg, rows):
        expected = np.zeros(64, dtype=np.int64)
        for s in starts[r]:
            if s > 0:
                expected[s:] += 1
        assert np.array_equal(out, expected)
        assert np.all(shards.tokens(np.array([r]))[0][np.array(starts[r], dtype=int) - 1][np.array(starts[r]) > 0] == EOS)


@pytest.mark.parametrize(
    "bad, named",
    [
        ({"tokenizer_sha256": "f" * 64}, "tokenizer_sha256: shard has " + "f" * 64),
        ({"format_version": 99}, "format_version: shard has 99, expected 1"),
        ({"eos_id": 0}, "eos_id: shard has 0, expected 256"),
        ({"seq_len": 128}, "seq_len: shard has 128, expected 64"),
    ],
)
def test_mismatched_metadata_is_rejected_naming_the_difference(tmp_path, docs, bad, named):
    write_split(tmp_path, 64, "train", docs, metadata=bad)
    with pytest.raises(ShardError) as err:
        open_set(tmp_path)
    assert named in str(err.value)
    assert "shard-00000.arrow" in str(err.value)


def test_shards_must_agree_on_the_tokenizer(tmp_path, docs):
    write_split(tmp_path, 64, "train", docs)
    write_split(tmp_path, 64, "validation", docs[:20], metadata={"tokenizer_sha256": "a" * 64})
    with pytest.raises(ShardError, match="tokenizer_sha256: shard has a{64}, expected " + TOKENIZER_SHA):
        open_shard_sets(tmp_path, [64], ["train", "validation"], EOS, VOCAB, None)


def test_vocabulary_larger_than_the_model_is_rejected(tmp_path, docs):
    write_split(tmp_path, 64, "train", docs)
    with pytest.raises(ShardError, match="vocab_size 257, larger than the model's 200"):
        open_shard_sets(tmp_path, [64], ["train"], EOS, 200, None)


def test_missing_shards_fail_with_the_folder_named(tmp_path, docs):
    with pytest.raises(ShardError, match=r"no shards .* in .*seq64/train"):
        open_set(tmp_path)
    write_split(tmp_path, 64, "train", docs, rows_per_shard=5)
    (split_dir(tmp_path, 64, "train") / "shard-00001.arrow").unlink()
    with pytest.raises(ShardError, match="lists shard shard-00001.arrow, which is missing"):
        open_set(tmp_path)


def test_stream_order_is_seeded_and_each_epoch_is_a_permutation():
    a, b = PhaseStream(37, seed=5, phase_index=0), PhaseStream(37, seed=5, phase_index=0)
    first = a.rows(0, 37)
    assert sorted(first) == list(range(37))
    assert np.array_equal(first, b.rows(0, 37))
    second = a.rows(37, 37)
    assert sorted(second) == list(range(37)) and not np.array_equal(first, second)
    assert not np.array_equal(first, PhaseStream(37, seed=6, phase_index=0).rows(0, 37))
    # an arbitrary window across the epoch boundary equals the concatenated epochs
    assert np.array_equal(PhaseStream(37, 5, 0).rows(30, 20), np.concatenate([first, second])[30:50])


def test_ranks_split_each_step_and_resume_from_a_position(tmp_path, docs):
    write_split(tmp_path, 64, "train", docs)
    shards = open_set(tmp_path)
    whole = TrainBatches(shards, PhaseStream(len(shards), 1, 0), rows_per_step=8, micro_rows=2,
                         rank=0, world_size=1, with_segments=True)
    halves = [TrainBatches(shards, PhaseStream(len(shards), 1, 0), 8, 2, rank=r, world_size=2, with_segments=True)
              for r in range(2)]
    assert whole.accumulation == 4 and halves[0].accumulation == 2
    for position in (0, 8, 8 * 40):  # the last one wraps into later epochs
        one = np.concatenate([mb.input_ids.numpy() for mb in whole.step(position)])
        two = np.concatenate([mb.input_ids.numpy() for r in range(2) for mb in halves[r].step(position)])
        assert np.array_equal(one, two)
    # a fresh loader asked for position p gives what a running one gives at p
    fresh = TrainBatches(shards, PhaseStream(len(shards), 1, 0), 8, 2, 0, 1, False)
    assert np.array_equal(fresh.step(24)[1].input_ids.numpy(), whole.step(24)[1].input_ids.numpy())
    with pytest.raises(ValueError, match="does not split into 3 rank"):
        TrainBatches(shards, PhaseStream(len(shards), 1, 0), 8, 2, 0, 3, False)


def test_a_truncated_shard_disagreeing_with_its_manifest_is_rejected(tmp_path, docs):
    write_split(tmp_path, 64, "train", docs, rows_per_shard=8)
    manifest = split_dir(tmp_path, 64, "train") / "manifest.json"
    listing = json.loads(manifest.read_text())
    listing["shards"][1]["rows"] = 9
    manifest.write_text(json.dumps(listing))
    with pytest.raises(ShardError, match="shard-00001.arrow has 8 rows, its manifest lists 9"):
        open_set(tmp_path)
