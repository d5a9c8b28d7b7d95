"""The index manifest: what an index folder holds, how it was built, and which files hold it.

``manifest.json`` is the folder's only pointer to its files (docs/index-format.md describes them).
:class:`Manifest` is its typed, frozen form: :meth:`Manifest.from_json` checks the JSON object and
refuses a foreign, newer or tampered one with a message that says what to run;
:meth:`Manifest.to_json` is what a build writes. The fields the program relies on (files, embedding,
chunking, documents, chunk_count, vector_store) are checked; the informational ones (corpus,
skipped, built_at, build_seconds) are read with defaults.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .chunking import CHUNKER_VERSION
from .errors import IndexStoreError, NoIndexError

FORMAT = "assistant-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REBUILD = "rebuild it with `assistant index build --rebuild`"

# The parts of a generation: part -> the ending of its file; the file is "<part>-<generation><ending>".
PARTS = {"vectors": ".faiss", "chunks": ".jsonl", "lexical": "", "units": ""}
STAGING = ".tmp-"  # prefix of a build's staging folder, ".tmp-<generation>"
LOCK = ".lock"
_TITLE_SEARCH = 4000  # characters of a document's start searched for its title
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?\S.*?)[ \t#]*$", re.M)
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")  # [text](url) -> text


def part_file(part: str, generation: str) -> str:
    """The file (or folder) name of ``part`` of ``generation``."""
    return f"{part}-{generation}{PARTS[part]}"


def chunker_id() -> str:
    """Names the chunking code's output; a new ``CHUNKER_VERSION`` re-chunks and re-embeds on the next build."""
    return f"sections-sentences-v{CHUNKER_VERSION}"


@dataclass(frozen=True)
class Embedding:
    model_id: str
    dimension: int
    weights_sha256: str = ""  # "" when the model's weights were not hashed
    dtype: str = ""

    def to_json(self) -> dict:
        return {"model_id": self.model_id, "weights_sha256": self.weights_sha256, "dimension": self.dimension,
                "dtype": self.dtype}

    @classmethod
    def from_json(cls, e: dict) -> Embedding:
        return cls(e["model_id"], e["dimension"], e.get("weights_sha256") or "", e.get("dtype") or "")


@dataclass(frozen=True)
class Chunking:
    chunker: str  # chunker_id() of the code that made the chunks
    size: int
    overlap: int

    def to_json(self) -> dict:
        return {"chunker": self.chunker, "size": self.size, "overlap": self.overlap}

    @classmethod
    def from_json(cls, c: dict) -> Chunking:
        return cls(c["chunker"], c["size"], c["overlap"])


@dataclass(frozen=True)
class DocumentRecord:
    """One document of the index: its chunks are ``first_chunk .. first_chunk + chunks - 1``."""

    source: str
    sha256: str
    first_chunk: int
    chunks: int
    pages: tuple[tuple[int, int], ...] = ()  # (offset, page number) where a PDF page starts
    chars: int = 0
    encoding: str = ""
    title: str = ""  # document_title() of its text
    bytes: int = 0  # the file's size
    added_at: str = ""  # ISO 8601 UTC: when this content was first indexed under this source

    def to_json(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "title": self.title, "bytes": self.bytes,
                "added_at": self.added_at, "chars": self.chars, "encoding": self.encoding,
                "first_chunk": self.first_chunk, "chunks": self.chunks, "pages": [list(p) for p in self.pages]}

    @classmethod
    def from_json(cls, d: dict) -> DocumentRecord:
        size = d.get("bytes")
        return cls(d["source"], d["sha256"], d["first_chunk"], d["chunks"], tuple(map(tuple, d.get("pages", []))),
                   d.get("chars", 0), d.get("encoding", ""), str(d.get("title") or ""),
                   size if isinstance(size, int) else 0, str(d.get("added_at") or ""))


def document_title(text: str, source: str, limit: int = 80) -> str:
    """A document's title: its first markdown heading (a .md or .txt file's, near its start), else its first
    non-empty line; markup and runs of whitespace removed, at most ``limit`` characters."""
    head = text[:_TITLE_SEARCH]
    found = _HEADING.search(head) if source.lower().endswith((".md", ".txt")) else None
    lines = (" ".join(_LINK.sub(r"\1", line).split()).strip("*_`~#>-= ")
             for line in ([found.group(1)] if found else head.splitlines()))
    title = next((line for line in lines if line), "")
    return title if len(title) <= limit else title[:limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Manifest:
    embedding: Embedding
    chunking: Chunking
    documents: tuple[DocumentRecord, ...]
    chunk_count: int
    files: Mapping[str, str] = field(default_factory=dict)  # part -> its file name in the folder
    generation: str = ""
    lexical: Mapping[str, str] = field(default_factory=dict)  # tokenizer and scoring of the BM25 index
    vector_store: Mapping[str, str] | None = None  # engine and collection, when the vectors are not in the folder
    corpus: str = ""
    skipped: tuple[tuple[str, str], ...] = ()  # (source, reason) of the files that were not indexed
    built_at: str = ""
    build_seconds: float = 0.0

    def __post_init__(self) -> None:  # read-only views, so a frozen manifest stays what was read
        for name in ("files", "lexical", "vector_store"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    def to_json(self) -> dict:
        """The JSON object of ``manifest.json`` (keys in the order a build has always written them)."""
        data = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "embedding": self.embedding.to_json(), "chunking": self.chunking.to_json(), "lexical": dict(self.lexical),
            "corpus": self.corpus, "documents": [d.to_json() for d in self.documents],
            "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
            "chunk_count": self.chunk_count, "built_at": self.built_at,
        }
        if self.vector_store is not None:
            data["vector_store"] = dict(self.vector_store)
        return dict(data, files=dict(self.files), generation=self.generation, build_seconds=self.build_seconds)

    @classmethod
    def from_json(cls, data: object, path: Path | str = MANIFEST) -> Manifest:
        """The manifest in ``data`` (the parsed ``manifest.json`` at ``path``, named in messages), checked."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise IndexStoreError(f"{path} is not an assistant index manifest: {REBUILD} or pick another --index")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexStoreError(f"index format version {version!r} in {Path(path).parent} is not supported (this "
                                  f"program reads version {FORMAT_VERSION}): {REBUILD}")
        for key in ("files", "embedding", "chunking", "documents", "chunk_count"):
            if key not in data:
                raise IndexStoreError(f"{path} lacks {key!r}: {REBUILD}")
        problem = _problem(data)
        if problem:
            raise IndexStoreError(f"{path} is damaged ({problem}): {REBUILD}")
        for part, name in data["files"].items():
            if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
                raise IndexStoreError(f"{path} names no valid {part} file: {REBUILD}")
        lexical, skipped = data.get("lexical"), data.get("skipped")
        return cls(
            embedding=Embedding.from_json(data["embedding"]), chunking=Chunking.from_json(data["chunking"]),
            documents=tuple(map(DocumentRecord.from_json, data["documents"])), chunk_count=data["chunk_count"],
            files=data["files"], generation=str(data.get("generation") or ""),
            lexical=lexical if isinstance(lexical, dict) else {}, vector_store=data.get("vector_store") or None,
            corpus=str(data.get("corpus", "")),
            skipped=tuple((str(s.get("source", "")), str(s.get("reason", "")))
                          for s in (skipped if isinstance(skipped, list) else ()) if isinstance(s, dict)),
            built_at=str(data.get("built_at", "")), build_seconds=data.get("build_seconds", 0.0))


def _problem(m: dict) -> str:
    """What is wrong with the shape of a manifest's values ('' if nothing), so a tampered one is refused clearly."""
    emb, chunking, count = m["embedding"], m["chunking"], m["chunk_count"]
    if not isinstance(m["files"], dict) or not isinstance(chunking, dict):
        return "'files' and 'chunking' must be objects"
    if not (isinstance(chunking.get("chunker"), str) and isinstance(chunking.get("size"), int)
            and isinstance(chunking.get("overlap"), int)):
        return "'chunking' needs a chunker and an integer size and overlap"
    if not (isinstance(emb, dict) and isinstance(emb.get("model_id"), str) and isinstance(emb.get("dimension"), int)):
        return "'embedding' needs a model_id and an integer dimension"
    if not isinstance(count, int) or not isinstance(m["documents"], list):
        return "'chunk_count' must be an integer and 'documents' a list"
    if m.get("vector_store") and not isinstance(m["vector_store"], dict):
        return "'vector_store' must be an object"
    first = 0
    for number, d in enumerate(m["documents"], 1):
        if not (isinstance(d, dict) and isinstance(d.get("source"), str) and isinstance(d.get("sha256"), str)
                and d.get("first_chunk") == first and isinstance(d.get("chunks"), int) and d["chunks"] >= 0):
            return f"document record {number} is malformed or its chunk range does not follow the previous one"
        pages = d.get("pages", [])
        if not (isinstance(pages, list) and all(isinstance(p, list) and len(p) == 2
                                                and all(isinstance(x, int) for x in p) for p in pages)):
            return f"the pages of {d['source']!r} are not (offset, page) pairs"
        first += d["chunks"]
    if first != count:
        return f"the documents hold {first} chunks, 'chunk_count' says {count}"
    return ""


def read(folder: Path) -> tuple[dict, Manifest]:
    """The manifest of the index in ``folder``: its JSON object as stored, and the same checked and typed."""
    path = folder / MANIFEST
    if not folder.exists():
        raise NoIndexError(f"no index at {folder}: build one with `assistant index build`")
    if not folder.is_dir():
        raise IndexStoreError(not_a_folder(folder))
    if not path.is_file():
        raise NoIndexError(f"{folder} is not an assistant index (no {MANIFEST}): {REBUILD} or pick another --index")
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IndexStoreError(f"{path} is damaged ({exc.__class__.__name__}): {REBUILD}") from exc
    return data, Manifest.from_json(data, path)


def not_a_folder(folder: Path) -> str:
    return (f"the index path {folder} is a file, not a folder: point --index (ASSISTANT_INDEX) at a folder, "
            "or move the file away")


def read_manifest(folder: Path) -> dict:
    """The checked manifest of the index in ``folder`` as its JSON object (for callers that read its keys)."""
    return read(folder)[0]


def check_compatible(manifest: Manifest | Mapping, embedder, what: str = "the index") -> None:
    """Refuse an index (or a vector store: ``what`` names it) whose vectors came from another embedding model.

    ``manifest``: a :class:`Manifest`, or a JSON object with an "embedding" object (an index's or a store's)."""
    emb = manifest.embedding.to_json() if isinstance(manifest, Manifest) else manifest["embedding"]
    same = emb.get("model_id") == embedder.model_id and (
        not emb.get("weights_sha256") or not embedder.weights_sha256
        or emb.get("weights_sha256") == embedder.weights_sha256)
    if not same:
        raise IndexStoreError(f"{what} was built with embedding model {emb.get('model_id')!r}, but "
                              f"{embedder.model_id!r} is configured: {REBUILD} (or set ASSISTANT_EMBED_MODEL "
                              "back to the index's model)")
