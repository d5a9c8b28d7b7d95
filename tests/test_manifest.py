"""Tests for assistant.manifest: the typed manifest, its JSON round trip, its checks and the file names."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from assistant.chunking import CHUNKER_VERSION
from assistant.errors import IndexStoreError
from assistant.index_build import build_index
from assistant.manifest import (FORMAT, FORMAT_VERSION, MANIFEST, PARTS, Chunking, DocumentRecord, Embedding,
                                Manifest, check_compatible, chunker_id, part_file, read, read_manifest)
from assistant.types import Document
from assistant.testing import FakeEmbedder

TEXTS = {"fruit.md": "# 水果\n\n苹果是一种常见的水果。香蕉产自热带地区。",
         "book.pdf": "第一页的内容。\n第二页的内容。"}


def manifest(**changes) -> Manifest:
    values = dict(
        embedding=Embedding("fake/char-ngrams", 64, "0" * 64, "fp32"),
        chunking=Chunking(chunker_id(), 60, 0),
        documents=(DocumentRecord("a.md", "1" * 64, 0, 2, chars=30, encoding="utf-8"),
                   DocumentRecord("b.pdf", "2" * 64, 2, 1, pages=((0, 1), (8, 2)), chars=16)),
        chunk_count=3, files={"chunks": "chunks-g.jsonl", "lexical": "lexical-g"}, generation="g",
        lexical={"tokenizer": "t", "scoring": "s"}, corpus="/corpus", skipped=(("empty.txt", "empty file"),),
        built_at="2026-11-23T10:00:00Z", build_seconds=1.5)
    return Manifest(**dict(values, **changes))


@pytest.fixture
def built(tmp_path):
    documents = [Document(s, t, hashlib.sha256(t.encode()).hexdigest(), pages=((0, 1), (8, 2)) if s.endswith(".pdf")
                          else ()) for s, t in TEXTS.items()]
    build_index(tmp_path / "index", documents, FakeEmbedder(), chunk_size=60, chunk_overlap=0,
                skipped=[("empty.txt", "empty file")], corpus=tmp_path)
    return tmp_path / "index"


def test_json_round_trip():
    m = manifest()
    data = m.to_json()
    assert data["format"] == FORMAT and data["format_version"] == FORMAT_VERSION
    assert json.loads(json.dumps(data)) == data  # plain JSON values only
    assert Manifest.from_json(json.loads(json.dumps(data))) == m
    m = manifest(vector_store={"engine": "milvus", "collection": "assistant"})
    assert Manifest.from_json(m.to_json()) == m and m.to_json()["vector_store"]["collection"] == "assistant"


def test_the_written_manifest_reads_back_as_written(built):
    stored, m = read(built)
    assert stored == json.loads((built / MANIFEST).read_text("utf-8")) == read_manifest(built)
    assert m.to_json() == stored  # nothing a build writes is lost or added by the typed form
    assert m.documents[1].pages == ((0, 1), (8, 2)) and m.skipped == (("empty.txt", "empty file"),)
    assert m.chunking == Chunking(chunker_id(), 60, 0) and m.embedding.model_id == "fake/char-ngrams"
    assert set(m.files) == {"chunks", "lexical", "vectors", "units"}
    assert all(m.files[part] == part_file(part, m.generation) for part in m.files)


def test_a_manifest_is_frozen():
    m = manifest()
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.generation = "other"
    with pytest.raises(TypeError):
        m.files["vectors"] = "../elsewhere"
    assert dataclasses.replace(m, generation="h").generation == "h" and m.generation == "g"


def test_older_manifests_without_the_informational_keys_are_read_with_defaults():
    data = manifest().to_json()
    for key in ("corpus", "skipped", "built_at", "build_seconds", "generation", "lexical"):
        del data[key]
    del data["embedding"]["dtype"], data["documents"][0]["chars"]
    m = Manifest.from_json(data)
    assert (m.corpus, m.skipped, m.built_at, m.generation, dict(m.lexical)) == ("", (), "", "", {})
    assert m.embedding.dtype == "" and m.documents[0].chars == 0


@pytest.mark.parametrize("change, expected", [
    (lambda m: m.update(format="other"), "not an assistant index manifest"),
    (lambda m: m.update(format_version=FORMAT_VERSION + 1), f"version {FORMAT_VERSION + 1}"),
    (lambda m: m.pop("documents"), "lacks 'documents'"),
    (lambda m: m["chunking"].pop("size"), "'chunking' needs"),
    (lambda m: m["embedding"].update(dimension="64"), "integer dimension"),
    (lambda m: m.update(chunk_count=4), "'chunk_count' says 4"),
    (lambda m: m["documents"][1].update(first_chunk=1), "document record 2"),
    (lambda m: m["documents"][1].update(pages=[[0]]), "(offset, page) pairs"),
    (lambda m: m.update(vector_store="milvus"), "'vector_store' must be an object"),
    (lambda m: m["files"].update(chunks="../chunks.jsonl"), "names no valid chunks file"),
])
def test_a_tampered_manifest_is_refused_with_one_line_saying_to_rebuild(change, expected):
    data = manifest().to_json()
    change(data)
    with pytest.raises(IndexStoreError) as caught:
        Manifest.from_json(data, "index/manifest.json")
    message = str(caught.value)
    assert expected in message and "rebuild" in message and "\n" not in message


def test_check_compatible_takes_a_manifest_or_a_json_object():
    m = manifest()
    check_compatible(m, FakeEmbedder())
    check_compatible(m.to_json(), FakeEmbedder())
    check_compatible({"embedding": {"model_id": "fake/char-ngrams", "dimension": 64}}, FakeEmbedder())  # a store's

    class Other(FakeEmbedder):
        weights_sha256 = "f" * 64

    for form in (m, m.to_json()):
        with pytest.raises(IndexStoreError, match="built with embedding model 'fake/char-ngrams'"):
            check_compatible(form, Other())


def test_file_names_come_from_one_table():
    assert {part: part_file(part, "G") for part in PARTS} == {
        "vectors": "vectors-G.faiss", "chunks": "chunks-G.jsonl", "lexical": "lexical-G", "units": "units-G"}


def test_the_chunker_id_names_the_chunker_version_not_its_source():
    assert chunker_id() == f"sections-sentences-v{CHUNKER_VERSION}"
