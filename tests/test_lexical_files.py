"""The BM25 index's files: saved and loaded without a Python dict or list of the vocabulary (docs/index-format.md)."""
import json
import random

import numpy as np
import pytest

from assistant import lexical
from assistant.lexical import LexicalIndex

TEXTS = [
    "番茄需要充足的阳光和每天浇水。",
    "The Transformer uses self-attention; BERT reads both directions.",
    "PPO 训练 CartPole，total_timesteps=10000。",
    "冰箱里的香蕉会变黑 banana fridge",
    "x" * 300 + " 一个很长的英文词之后还有中文",
]
QUERIES = ["番茄 阳光", "transformer attention", "PPO 多少步 total_timesteps", "香蕉 冰箱", "x" * 300, "qqq zzz"]


@pytest.fixture
def saved(tmp_path):
    built = LexicalIndex.build(TEXTS)
    built.save(tmp_path / "lexical")
    return built, tmp_path / "lexical"


def test_a_saved_index_reads_back_as_the_built_one(saved):
    built, folder = saved
    loaded = LexicalIndex.load(folder)
    assert isinstance(loaded.vocab, lexical._Vocabulary) and list(loaded.vocab) == list(built.vocab)
    for query in QUERIES:
        np.testing.assert_array_equal(loaded.scores(query), built.scores(query))
        assert loaded.matched_terms(query, list(range(len(TEXTS)))) == built.matched_terms(query, list(range(len(TEXTS))))
    assert loaded.scores("番茄 阳光").max() > 0 and not loaded.scores("qqq zzz").any()
    for i, token in enumerate(built.vocab):
        assert loaded._ids[token] == i and token in loaded._ids
    assert "zzz" not in loaded._ids and loaded.contains("番茄") and not loaded.contains("zzz")
    assert sorted(p.name for p in folder.iterdir()) == sorted(lexical.FILES)


def test_the_vectorised_hash_is_the_one_a_query_token_gets():
    rng = random.Random(3)
    alphabet = "abcxyz0189_" + "番茄阳光中文词汇模型创业痛点"
    tokens = list(dict.fromkeys("".join(rng.choice(alphabet) for _ in range(rng.choice([1, 2, 3, 7, 40, 300])))
                                for _ in range(500)))
    vocab = lexical._Vocabulary("".join(t + "\n" for t in tokens).encode("utf-8"))
    assert vocab.hashes().tolist() == [lexical._fnv(t) for t in tokens]
    assert len(vocab) == len(tokens) and vocab[7] == tokens[7] and vocab[-1] == tokens[-1]


def test_tokens_whose_hashes_collide_are_still_found_exactly(saved, monkeypatch):
    built, folder = saved
    monkeypatch.setattr(lexical._Vocabulary, "hashes", lambda self: np.zeros(len(self), dtype=np.uint64))
    monkeypatch.setattr(lexical, "_fnv", lambda token: 0)  # every token collides with every other
    loaded = LexicalIndex.load(folder)
    assert all(loaded._ids[t] == i for i, t in enumerate(built.vocab))
    assert "zzz" not in loaded._ids
    np.testing.assert_array_equal(loaded.scores("番茄 阳光"), built.scores("番茄 阳光"))


def test_an_index_saved_with_vocab_json_still_loads(saved):
    built, folder = saved
    tokens = (folder / "vocab.txt").read_text("utf-8").splitlines()
    (folder / "vocab.json").write_text(json.dumps(tokens, ensure_ascii=False), "utf-8")
    for name in ("vocab.txt", "postings.npy", "tf.npy", "indptr.npy"):
        (folder / name).unlink()
    loaded = LexicalIndex.load(folder)
    for query in QUERIES:
        np.testing.assert_array_equal(loaded.scores(query), built.scores(query))


def test_an_index_of_no_tokens_round_trips(tmp_path):
    LexicalIndex.build(["。。。", "！！"]).save(tmp_path / "lexical")
    loaded = LexicalIndex.load(tmp_path / "lexical")
    assert len(loaded) == 2 and len(loaded.vocab) == 0 and not loaded.scores("番茄").any()


def _vocab(data: bytes):
    return lambda folder: (folder / "vocab.txt").write_bytes(data)


def _postings(name: str, change):
    def edit(folder):
        path = folder / f"{name}.npy"
        np.save(path, change(np.load(path)), allow_pickle=False)
    return edit


@pytest.mark.parametrize("damage", [
    _vocab("番茄\n番茄\n".encode("utf-8")),  # a token twice (and the vocabulary's size is off)
    _vocab(b"\xff\xfe\n"),  # not UTF-8
    _vocab("番茄".encode("utf-8")),  # no final line break
    _postings("tf", lambda tf: tf + 1),  # counts that do not add up to the chunks' tokens
    _postings("indptr", lambda indptr: indptr[:-1]),
    _postings("postings", lambda chunks: chunks + 100),  # chunk ids past the index
    _postings("postings", lambda chunks: chunks.astype(np.float64)),
], ids=["duplicate", "mis-encoded", "unterminated", "tf", "indptr", "chunk ids", "float ids"])
def test_damaged_files_are_refused(saved, damage):
    _, folder = saved
    damage(folder)
    with pytest.raises(ValueError):
        LexicalIndex.load(folder)


def test_a_token_listed_twice_is_refused_even_when_the_sizes_agree(tmp_path):
    index = LexicalIndex.build(["番茄 阳光"])
    index.save(tmp_path / "lexical")
    tokens = (tmp_path / "lexical" / "vocab.txt").read_text("utf-8").splitlines()
    (tmp_path / "lexical" / "vocab.txt").write_text("".join(tokens[0] + "\n" for _ in tokens), "utf-8")
    with pytest.raises(ValueError, match="twice"):
        LexicalIndex.load(tmp_path / "lexical")
