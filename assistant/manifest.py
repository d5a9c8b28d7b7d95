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
FORMAT_VERSION = 1  # an index of one segment: the version every full build writes (and older programs read)
SEGMENTS_VERSION = 2  # an index of several segments, written by an add-only update (docs/index-format.md)
READ_VERSIONS = (FORMAT_VERSION, SEGMENTS_VERSION)
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
    mtime_ns: int = 0  # the file's mtime when it was read (0: unknown, or too recent to be trusted)

    def to_json(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "title": self.title, "bytes": self.bytes,
                "added_at": self.added_at, "chars": self.chars, "encoding": self.encoding,
                "first_chunk": self.first_chunk, "chunks": self.chunks, "pages": [list(p) for p in self.pages],
                "mtime_ns": self.mtime_ns}

    @classmethod
    def from_json(cls, d: dict) -> DocumentRecord:
        size, mtime = d.get("bytes"), d.get("mtime_ns")
        return cls(d["source"], d["sha256"], d["first_chunk"], d["chunks"], tuple(map(tuple, d.get("pages", []))),
                   d.get("chars", 0), d.get("encoding", ""), str(d.get("title") or ""),
                   size if isinstance(size, int) else 0, str(d.get("added_at") or ""),
                   mtime if isinstance(mtime, int) and not isinstance(mtime, bool) else 0)


def dumps(data: dict) -> str:
    """The text of a manifest: one top-level key per line, and each item of a list (a document record, a
    skipped file, a segment) as one compact line. JSON like any other; made by the C encoder (``indent``
    would take the slow pure-Python one: a 20,000-chunk index's manifest took 0.15 s that way)."""
    def value(v) -> str:
        if isinstance(v, list) and v:
            return "[\n  " + ",\n  ".join(json.dumps(x, ensure_ascii=False) for x in v) + "\n ]"
        return json.dumps(v, ensure_ascii=False)

    return "{\n" + ",\n".join(f" {json.dumps(k, ensure_ascii=False)}: {value(v)}" for k, v in data.items()) + "\n}"


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
class Segment:
    """A run of consecutive chunks whose files one build wrote: chunks ``start .. start + chunk_count - 1``
    of the index are in ``files`` (part -> file name), named with ``generation``."""

    generation: str
    chunk_count: int
    files: Mapping[str, str]
    dtype: str = ""  # of the embedder that made its vectors ("" when not recorded: written before 2026-12-03)

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))

    def to_json(self) -> dict:
        data = {"generation": self.generation, "chunk_count": self.chunk_count, "files": dict(self.files)}
        return dict(data, dtype=self.dtype) if self.dtype else data


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
    # Several segments (format version 2): their files in chunk order; () for one segment, whose files are
    # ``files`` (format version 1). ``files`` is empty when there are segments.
    segments: tuple[Segment, ...] = ()

    @property
    def parts(self) -> tuple[Segment, ...]:
        """The index's segments in chunk order (one, of ``files`` and ``generation``, in a version 1 index)."""
        return self.segments or (Segment(self.generation, self.chunk_count, self.files, self.embedding.dtype),)

    @property
    def dtypes(self) -> frozenset[str]:
        """The dtypes its segments' vectors were made in (a segment that recorded none: the index's)."""
        return frozenset(s.dtype or self.embedding.dtype for s in self.parts)

    @property
    def referenced(self) -> frozenset[str]:
        """Every file name the manifest makes part of the index."""
        return frozenset(name for segment in self.parts for name in segment.files.values())

    def __post_init__(self) -> None:  # read-only views, so a frozen manifest stays what was read
        for name in ("files", "lexical", "vector_store"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    def to_json(self) -> dict:
        """The JSON object of ``manifest.json`` (keys in the order a build has always written them)."""
        data = {
            "format": FORMAT, "format_version": SEGMENTS_VERSION if self.segments else FORMAT_VERSION,
            "embedding": self.embedding.to_json(), "chunking": self.chunking.to_json(), "lexical": dict(self.lexical),
            "corpus": self.corpus, "documents": [d.to_json() for d in self.documents],
            "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
            "chunk_count": self.chunk_count, "built_at": self.built_at,
        }
        if self.vector_store is not None:
            data["vector_store"] = dict(self.vector_store)
        where = {"segments": [s.to_json() for s in self.segments]} if self.segments else {"files": dict(self.files)}
        return dict(data, **where, generation=self.generation, build_seconds=self.build_seconds)

    @classmethod
    def from_json(cls, data: object, path: Path | str = MANIFEST) -> Manifest:
        """The manifest in ``data`` (the parsed ``manifest.json`` at ``path``, named in messages), checked."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise IndexStoreError(f"{path} is not an assistant index manifest: {REBUILD} or pick another --index")
        version = data.get("format_version")
        if version not in READ_VERSIONS or isinstance(version, bool):
            raise IndexStoreError(f"index format version {version!r} in {Path(path).parent} is not supported (this "
                                  f"program reads versions {FORMAT_VERSION} and {SEGMENTS_VERSION}): {REBUILD}")
        where = "segments" if version == SEGMENTS_VERSION else "files"
        for key in (where, "embedding", "chunking", "documents", "chunk_count"):
            if key not in data:
                raise IndexStoreError(f"{path} lacks {key!r} (format version {version}): {REBUILD}")
        problem = _problem(data, version)
        if problem:
            raise IndexStoreError(f"{path} is damaged ({problem}): {REBUILD}")
        segments = _segments(data, path) if version == SEGMENTS_VERSION else ()
        if not segments:
            _check_files(data["files"], path)
        lexical, skipped = data.get("lexical"), data.get("skipped")
        return cls(
            embedding=Embedding.from_json(data["embedding"]), chunking=Chunking.from_json(data["chunking"]),
            documents=tuple(map(DocumentRecord.from_json, data["documents"])), chunk_count=data["chunk_count"],
            files={} if segments else data["files"], generation=str(data.get("generation") or ""), segments=segments,
            lexical=lexical if isinstance(lexical, dict) else {}, vector_store=data.get("vector_store") or None,
            corpus=str(data.get("corpus", "")),
            skipped=tuple((str(s.get("source", "")), str(s.get("reason", "")))
                          for s in (skipped if isinstance(skipped, list) else ()) if isinstance(s, dict)),
            built_at=str(data.get("built_at", "")), build_seconds=data.get("build_seconds", 0.0))


def _check_files(files: dict, path: Path | str, where: str = "") -> None:
    """Refuse file names that could leave the folder (or hide in it): the loader opens them as named. A
    segment (``where`` names it) may name only the known parts, and no empty name."""
    for part, name in files.items():
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith(".") \
                or (where and (part not in PARTS or not name)):
            raise IndexStoreError(f"{path} names no valid {part} file{where}: {REBUILD}")


def _segments(data: dict, path: Path | str) -> tuple[Segment, ...]:
    """The segments of a version 2 manifest, checked: each names its own valid files (chunks, lexical and
    vectors, units in all or none), their chunk counts add up to ``chunk_count``, each starts where a
    document starts, and the newest one is the manifest's generation."""
    raw = data["segments"]
    if not isinstance(raw, list) or not raw or not all(
            isinstance(s, dict) and isinstance(s.get("generation"), str) and s["generation"]
            and isinstance(s.get("chunk_count"), int) and not isinstance(s["chunk_count"], bool)
            and s["chunk_count"] > 0 and isinstance(s.get("files"), dict) for s in raw):
        raise IndexStoreError(f"{path} is damaged ('segments' must be a list of objects with a generation, a "
                              f"positive chunk_count and files): {REBUILD}")
    if data.get("vector_store"):
        raise IndexStoreError(f"{path} is damaged (an index with segments keeps its vectors in its own files, "
                              f"not in a vector store): {REBUILD}")
    names: set[str] = set()
    for number, s in enumerate(raw, 1):
        where = f" in segment {number}"
        _check_files(s["files"], path, where)
        for part in ("chunks", "lexical", "vectors"):
            if part not in s["files"]:
                raise IndexStoreError(f"{path} names no valid {part} file{where}: {REBUILD}")
        if ("units" in s["files"]) != ("units" in raw[0]["files"]):
            raise IndexStoreError(f"{path} is damaged (segment {number} differs from the first in having "
                                  f"sentence vectors): {REBUILD}")
        if names & set(s["files"].values()) or len(set(s["files"].values())) != len(s["files"]):
            raise IndexStoreError(f"{path} is damaged (segment {number} names a file another part names): {REBUILD}")
        names |= set(s["files"].values())
    counts = [s["chunk_count"] for s in raw]
    if sum(counts) != data["chunk_count"]:
        raise IndexStoreError(f"{path} is damaged (the segments hold {sum(counts)} chunks, 'chunk_count' says "
                              f"{data['chunk_count']}): {REBUILD}")
    starts = {d["first_chunk"] for d in data["documents"]}
    edges = [sum(counts[:i]) for i in range(len(counts))]
    if any(edge not in starts for edge in edges):
        raise IndexStoreError(f"{path} is damaged (a segment does not start where a document starts): {REBUILD}")
    if data.get("generation") != raw[-1]["generation"]:
        raise IndexStoreError(f"{path} is damaged (its generation is not its newest segment's): {REBUILD}")
    return tuple(Segment(s["generation"], s["chunk_count"], s["files"],
                         s["dtype"] if isinstance(s.get("dtype"), str) else "") for s in raw)


def _problem(m: dict, version: int = FORMAT_VERSION) -> str:
    """What is wrong with the shape of a manifest's values ('' if nothing), so a tampered one is refused clearly.

    Version 1 lists documents in chunk order; in version 2 (segments) a document added later may sit among the
    others in the list (the list keeps the corpus order) while its chunks are at the end: there the chunk
    ranges, in order of ``first_chunk``, must follow each other."""
    emb, chunking, count = m["embedding"], m["chunking"], m["chunk_count"]
    where = "segments" if version == SEGMENTS_VERSION else "files"
    if not isinstance(m[where], list if version == SEGMENTS_VERSION else dict) or not isinstance(chunking, dict):
        return f"'{where}' must be {'a list' if version == SEGMENTS_VERSION else 'an object'} and 'chunking' an object"
    if not (isinstance(chunking.get("chunker"), str) and isinstance(chunking.get("size"), int)
            and isinstance(chunking.get("overlap"), int)):
        return "'chunking' needs a chunker and an integer size and overlap"
    if not (isinstance(emb, dict) and isinstance(emb.get("model_id"), str) and isinstance(emb.get("dimension"), int)):
        return "'embedding' needs a model_id and an integer dimension"
    if not isinstance(count, int) or not isinstance(m["documents"], list):
        return "'chunk_count' must be an integer and 'documents' a list"
    if m.get("vector_store") and not isinstance(m["vector_store"], dict):
        return "'vector_store' must be an object"
    documents = m["documents"]
    for number, d in enumerate(documents, 1):
        if not (isinstance(d, dict) and isinstance(d.get("source"), str) and isinstance(d.get("sha256"), str)
                and isinstance(d.get("first_chunk"), int) and isinstance(d.get("chunks"), int) and d["chunks"] >= 0):
            return f"document record {number} is malformed or its chunk range does not follow the previous one"
        pages = d.get("pages", [])
        if not (isinstance(pages, list) and all(isinstance(p, list) and len(p) == 2
                                                and all(isinstance(x, int) for x in p) for p in pages)):
            return f"the pages of {d['source']!r} are not (offset, page) pairs"
    order = range(len(documents))
    if version == SEGMENTS_VERSION:
        order = sorted(order, key=lambda i: (documents[i]["first_chunk"], documents[i]["chunks"]))
        if len({d["source"] for d in documents}) != len(documents):
            return "a document is listed twice"
    first = 0
    for i in order:
        if documents[i]["first_chunk"] != first:
            return f"document record {i + 1} is malformed or its chunk range does not follow the previous one"
        first += documents[i]["chunks"]
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
