"""The committed GPT-2 tokenizer: genuine ranks, reproducible build, tiktoken-equal ids."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile

import numpy as np
import pytest

from pipeline import build_tokenizer as build
from pipeline.tokenizer import (
    EOS_ID,
    TOKENIZER_PATH,
    VOCAB_SIZE,
    Encoder,
    load_tokenizer,
    ranks_from_tokenizer_json,
    tiktoken_encoding,
)
from tests.pipeline.test_tokenize_data import real_texts


def ranks_file_bytes(ranks: dict[bytes, int]) -> bytes:
    """gpt2.tiktoken as shipped: ``base64 rank`` lines in rank order."""
    lines = [base64.b64encode(token) + b" " + str(rank).encode() for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    return b"\n".join(lines) + b"\n"


@pytest.fixture(scope="module")
def ranks():
    return ranks_from_tokenizer_json()


@pytest.fixture(scope="module")
def texts():
    code, licenses = real_texts(max_files=80)
    extra = [
        "A document that mentions <|endoftext|> in its text.",
        "naïve café — 日本語のテキスト 🙂 \t\n\n  trailing spaces   \r\n",
        "",
        "     ",
        "'s 're 've 'm 'll 'd 123456789 ¡¿ \u00a0nbsp",
    ]
    return code + licenses + extra


@pytest.fixture(scope="module")
def ids(texts):
    return Encoder("tokenizers").encode_ids(texts)


def test_committed_vocab_is_the_genuine_gpt2_ranks(ranks):
    # Re-serialising the vocab as gpt2.tiktoken must give the file whose hash tiktoken
    # publishes for r50k_base: the committed tokenizer carries exactly those ranks.
    assert len(ranks) == EOS_ID
    assert hashlib.sha256(ranks_file_bytes(ranks)).hexdigest() == build.RANKS_SHA256


def test_build_reproduces_committed_file_byte_identically(ranks, tmp_path):
    source = tmp_path / "gpt2.tiktoken"
    source.write_bytes(ranks_file_bytes(ranks))
    out = tmp_path / "tokenizer.json"
    build.build(source, out)
    assert out.read_bytes() == TOKENIZER_PATH.read_bytes()


def test_build_reads_the_sdist_tarball(ranks, tmp_path):
    payload = ranks_file_bytes(ranks)
    sdist = tmp_path / "openai_whisper-0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo("openai_whisper-0/" + build.RANKS_MEMBER)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    out = tmp_path / "tokenizer.json"
    build.build(sdist, out)
    assert out.read_bytes() == TOKENIZER_PATH.read_bytes()


def test_build_refuses_ranks_with_another_hash(ranks, tmp_path):
    tampered = dict(ranks)
    a, b = next(t for t in tampered if len(t) > 1), next(t for t in reversed(list(tampered)) if len(t) > 1)
    tampered[a], tampered[b] = tampered[b], tampered[a]
    source = tmp_path / "gpt2.tiktoken"
    source.write_bytes(ranks_file_bytes(tampered))
    with pytest.raises(ValueError, match="SHA-256"):
        build.build(source, tmp_path / "tokenizer.json")


def test_merge_derivation_on_a_toy_vocabulary():
    ranks = {bytes([b]): b for b in range(256)}
    for token in (b"ab", b"abc", b"bc", b"abcd", b"bcd"):
        ranks[token] = len(ranks)
    # "abcd" is built from its lower-ranked parts by BPE: ab+c -> abc, then abc+d.
    assert build.bpe_parts(b"abcd", ranks, ranks[b"abcd"]) == [b"abc", b"d"]
    merges = build.derive_merges(ranks)
    assert merges == [(b"a", b"b"), (b"ab", b"c"), (b"b", b"c"), (b"abc", b"d"), (b"bc", b"d")]


def test_tokenizer_shape():
    tokenizer = load_tokenizer()
    assert tokenizer.get_vocab_size() == VOCAB_SIZE == 50257
    assert tokenizer.token_to_id("<|endoftext|>") == EOS_ID == 50256
    assert tokenizer.encode("Hello world", add_special_tokens=False).ids == [15496, 995]


def test_round_trip_decode_is_lossless(texts, ids):
    tokenizer = load_tokenizer()
    for text, doc_ids in zip(texts, ids):
        assert max(doc_ids, default=0) < EOS_ID
        assert tokenizer.decode(doc_ids, skip_special_tokens=False) == text


def test_literal_endoftext_in_text_is_not_eos():
    ids = Encoder("tokenizers").encode_ids(["before <|endoftext|> after"])[0]
    assert EOS_ID not in ids
    assert load_tokenizer().decode(ids) == "before <|endoftext|> after"


@pytest.mark.parametrize("kind, threads", [("tokenizers", 1), ("tiktoken", 1), ("tiktoken", 2)])
def test_encode_with_eos_appends_one_eos_per_document(texts, kind, threads):
    if kind == "tiktoken":
        pytest.importorskip("tiktoken")
    batch = texts[:20] + ["before <|endoftext|> after", ""]
    flat, lengths = Encoder(kind, threads=threads).encode_with_eos(batch)
    ids = Encoder("tokenizers").encode_ids(batch)  # the reference ids
    assert flat.dtype == np.uint16
    assert lengths.tolist() == [len(x) + 1 for x in ids]
    ends = np.cumsum(lengths) - 1
    assert (flat[ends] == EOS_ID).all() and int((flat == EOS_ID).sum()) == len(ids)
    assert flat.tolist() == [t for x in ids for t in x + [EOS_ID]]


def test_ids_equal_tiktoken_on_real_text(texts, ids):
    tiktoken = pytest.importorskip("tiktoken")
    encoding = tiktoken_encoding()
    assert isinstance(encoding, tiktoken.Encoding)
    expected = [encoding.encode_ordinary(t) for t in texts]
    assert sum(len(x) for x in expected) > 100_000  # a real slice, not a toy
    assert ids == expected
    assert Encoder("tiktoken", threads=2).encode_ids(texts) == expected


def test_transformers_loads_the_tokenizer(texts, ids):
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_PATH), eos_token="<|endoftext|>")
    assert fast.eos_token_id == EOS_ID and len(fast) == VOCAB_SIZE
    sample = texts[:10]
    assert [fast.encode(t, add_special_tokens=False) for t in sample] == ids[:10]
