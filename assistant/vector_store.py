"""Where the chunk vectors live: the FAISS file of the index folder (default) or a Milvus collection.

Only the dense chunk vectors move. Chunks, sentence vectors and the BM25 token index stay in the
index folder either way: they are the reader's and the lexical side's data.

``ASSISTANT_VECTOR_STORE`` picks the store: empty for the index folder, ``milvus-lite:///path/to.db``
for an embedded Milvus Lite file, ``http://host:19530`` for a Milvus server or cluster; the
collection is ``ASSISTANT_VECTOR_COLLECTION`` (default ``assistant``).

Row ids: the FAISS file is rewritten with every generation, so its row ids are chunk positions. A
Milvus collection outlives generations and is updated in place, so its rows are keyed by
:func:`chunk_keys`, a hash of (chunking, source, document sha256, chunk ordinal): a key names one
chunk's text for good, and a server still serving the previous generation never maps a key to the
wrong chunk (keys it does not know are dropped from its results).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ConfigError, IndexStoreError

log = logging.getLogger(__name__)

STORE_FORMAT = "assistant-vectors"
STORE_FORMAT_VERSION = 1
_PROPERTY = "assistant.manifest"  # the collection property holding the store manifest (JSON)
_BATCH = 1000  # rows per insert / get / delete request (768 float32 x 1000 = 3 MB, well under gRPC's 64 MB)
_REBUILD = "rebuild it with `assistant index build --rebuild`"
# Every read at Session consistency: a process sees its own writes (a build, then its count and answers), and
# reads what the server holds without waiting for a time tick. pymilvus' default, Bounded, reads a snapshot about
# 5 s old on a Milvus server (a count right after a build missed 3,000 of 20,000 rows); Strong waits for the next
# time tick, 400 ms a search on Milvus 2.3.5 (so only a delete waits for it: MilvusStore._until_visible). Milvus
# Lite reads its own writes at any level.
_CONSISTENCY = "Session"


class VectorStore(Protocol):
    """Dense chunk vectors, searched top-k by inner product (cosine on unit vectors): the FAISS file of an
    index folder and a Milvus collection alike (``assistant.testing.VectorStoreConformance`` checks both)."""

    name: str  # for messages: "the FAISS file of index/" or "Milvus collection 'assistant' at ..."
    persistent: bool  # rows survive between generations (updated in place) rather than rewritten

    def count(self) -> int: ...

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ids (int64) and scores of the ``k`` nearest rows, best first."""

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (float32, one row per id, in the order given)."""


class PersistentStore(VectorStore, Protocol):
    """A store whose rows outlive index generations (Milvus), so a build writes it in place: rows by chunk
    key, and the store's own manifest (format version, embedding model id, weights sha256, dimension,
    generation). The FAISS file needs none of this: each generation writes a new one beside its manifest."""

    def create(self, manifest: dict) -> None:
        """Empty the store for vectors of ``manifest``'s model and dimension (dropping what it held)."""

    def add(self, ids: np.ndarray, vectors: np.ndarray, sources: list[str]) -> None:
        """Write rows; a row whose id is already stored is replaced."""

    def delete(self, ids: np.ndarray) -> None: ...

    def delete_document(self, source: str) -> None: ...

    def read_manifest(self) -> dict | None:
        """The store manifest, or None when the store holds nothing yet."""

    def write_manifest(self, manifest: dict) -> None: ...


def store_manifest(model_id: str, weights_sha256: str, dimension: int, generation: str) -> dict:
    """``generation`` names the index folder generation the rows belong to; "" while a build is changing them."""
    return {"format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION, "generation": generation,
            "embedding": {"model_id": model_id, "weights_sha256": weights_sha256, "dimension": dimension}}


def chunk_keys(documents: list[dict], chunking: dict) -> np.ndarray:
    """One stable int64 key per chunk of an index manifest's ``documents`` (in chunk order)."""
    salt = json.dumps(chunking, sort_keys=True)
    keys = np.empty(sum(d["chunks"] for d in documents), dtype=np.int64)
    i = 0
    for d in documents:
        for ordinal in range(d["chunks"]):
            digest = hashlib.blake2b(f"{salt}\0{d['source']}\0{d['sha256']}\0{ordinal}".encode(), digest_size=8)
            keys[i] = int.from_bytes(digest.digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF  # non-negative int64
            i += 1
    return keys


def check_held(folder: Path, manifest: dict, store: PersistentStore | None) -> None:
    """The folder's vectors were written to a store: it must be the configured one, built with the same model."""
    collection = manifest["vector_store"].get("collection")
    if store is None or not store.persistent:
        raise IndexStoreError(f"{folder} keeps its vectors in the Milvus collection {collection!r}: set "
                              "ASSISTANT_VECTOR_STORE to that Milvus, or rebuild it here with "
                              "`assistant index build --rebuild`")
    if getattr(store, "collection", collection) != collection:
        raise IndexStoreError(f"{folder} keeps its vectors in the collection {collection!r}, but "
                              f"ASSISTANT_VECTOR_COLLECTION names {store.collection!r}: set it back, or {_REBUILD}")
    held = store.read_manifest()
    if held is None:
        raise IndexStoreError(f"{store.name} does not exist (the index {folder} was built into it): {_REBUILD}")
    ours, theirs = manifest["embedding"], held["embedding"]
    if (theirs.get("model_id"), theirs.get("dimension")) != (ours.get("model_id"), ours.get("dimension")) or (
            theirs.get("weights_sha256") and ours.get("weights_sha256")
            and theirs["weights_sha256"] != ours["weights_sha256"]):
        raise IndexStoreError(f"{store.name} holds vectors of embedding model {theirs.get('model_id')!r}, but the "
                              f"index {folder} was built with {ours.get('model_id')!r}: {_REBUILD}")
    if held.get("generation") != manifest.get("generation"):
        log.warning("%s holds generation %r, the index folder %r (a build is in progress or was interrupted)",
                    store.name, held.get("generation") or "(being written)", manifest.get("generation"))


def write_rows(store: PersistentStore, manifest: dict, sources: list[str], vectors: list, to_embed: list[int],
               previous_keys: np.ndarray | None) -> None:
    """Bring ``store`` to the new generation: the difference from ``previous_keys``, or everything."""
    emb = manifest["embedding"]
    pending = store_manifest(emb["model_id"], emb["weights_sha256"], emb["dimension"], "")  # "being written"
    keys = chunk_keys(manifest["documents"], manifest["chunking"])
    if previous_keys is None:
        store.create(pending)
        ids = list(range(len(sources)))
    else:
        store.write_manifest(pending)
        store.delete(np.setdiff1d(previous_keys, keys))
        ids = sorted(to_embed)
    if ids:
        store.add(keys[ids], np.vstack([vectors[i] for i in ids]), [sources[i] for i in ids])


class FaissStore:
    """The vectors file of an index folder, for searching: an exact inner-product ``faiss.IndexFlatIP`` (or any
    faiss index). A build writes the file whole (``index_build``), so its row ids are chunk positions."""

    persistent = False

    def __init__(self, index, name: str = "the FAISS index") -> None:
        self.index, self.name = index, name

    def count(self) -> int:
        return int(self.index.ntotal)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), scores[0][keep]

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return self.index.reconstruct_batch(np.asarray(ids, dtype=np.int64))


def parse_store(uri: str) -> tuple[str, str]:
    """``(kind, address)`` of an ASSISTANT_VECTOR_STORE value: ("", "") for the folder, ("milvus", uri)."""
    uri = uri.strip()
    if not uri:
        return "", ""
    if uri.startswith("milvus-lite://"):
        path = uri.removeprefix("milvus-lite://")
        if not path.endswith(".db"):
            raise ConfigError(f"ASSISTANT_VECTOR_STORE={uri!r}: a Milvus Lite file must end in .db "
                              "(milvus-lite:///path/to/assistant.db)")
        return "milvus", path
    if uri.startswith(("http://", "https://", "tcp://")):
        return "milvus", uri
    raise ConfigError(f"ASSISTANT_VECTOR_STORE={uri!r} is not a store: leave it empty for the index folder, or use "
                      "milvus-lite:///path/to/assistant.db or http://host:19530")


def open_store(uri: str, collection: str = "assistant") -> PersistentStore | None:
    """The configured store (None = the FAISS file of the index folder). Connects on first use."""
    kind, address = parse_store(uri)
    return MilvusStore(address, collection) if kind == "milvus" else None


class MilvusStore:
    """A Milvus collection (server, cluster or Milvus Lite file) through pymilvus's MilvusClient.

    Fields: ``id`` (the chunk key, primary), ``source`` (for deleting a document) and ``vector``
    (FLAT index, inner product: exact search, so answers match the FAISS folder's). The store
    manifest is a collection property. Run with pymilvus 3.0.2 against Milvus Lite 3.2.2
    (tests/test_vector_store.py) and a Milvus 2.3.5 standalone server (tests/test_milvus_server.py).
    """

    persistent = True

    def __init__(self, address: str, collection: str = "assistant", *, index_type: str = "FLAT",
                 index_params: dict | None = None, search_params: dict | None = None, timeout: float = 30.0) -> None:
        if not collection or not collection.replace("_", "a").isalnum() or collection[0].isdigit():
            raise ConfigError(f"ASSISTANT_VECTOR_COLLECTION={collection!r}: use letters, digits and _ "
                              "(not starting with a digit)")
        self.address, self.collection = address, collection
        self.index_type, self.index_params, self.search_params = index_type, index_params or {}, search_params or {}
        self.timeout = timeout
        self.name = f"Milvus collection {collection!r} at {address}"
        self._client = None
        self._loaded = False

    # -- connection ---------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            try:
                from pymilvus import MilvusClient
            except ImportError:
                raise IndexStoreError("the Milvus vector store needs pymilvus and milvus-lite: "
                                      "pip install .[milvus]") from None
            try:
                if self.address.startswith(("http://", "https://", "tcp://")):
                    self._client = MilvusClient(uri=self.address, timeout=self.timeout)
                else:
                    self._client = MilvusClient(self.address)
            except Exception as exc:  # pymilvus raises MilvusException subclasses with a .message
                if self.address.endswith(".db"):  # pymilvus logs Milvus Lite's reason and raises without it
                    raise IndexStoreError(f"cannot open the Milvus Lite file {self.address} ({_reason(exc)}): is "
                                          "another process using it? A .db opens in one process only; serve several "
                                          "workers from a Milvus server (ASSISTANT_VECTOR_STORE=http://host:19530)") \
                        from exc
                raise IndexStoreError(f"cannot reach the vector store {self.address} ({_reason(exc)}): start Milvus "
                                      "there or fix ASSISTANT_VECTOR_STORE") from exc
        return self._client

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except IndexStoreError:
            raise
        except Exception as exc:
            if exc.__class__.__module__.startswith("pymilvus"):
                raise IndexStoreError(f"{self.name}: {what} failed ({_reason(exc)})") from exc
            raise

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._call("loading the collection", self.client.load_collection, self.collection)
            self._loaded = True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client, self._loaded = None, False

    # -- the collection -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return bool(self._call("listing collections", self.client.has_collection, self.collection))

    def create(self, manifest: dict) -> None:
        """A new, empty collection for ``manifest``'s dimension (an existing one is dropped first)."""
        from pymilvus import DataType, MilvusClient

        client = self.client
        if self.exists():
            self._call("dropping the old collection", client.drop_collection, self.collection)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("source", DataType.VARCHAR, max_length=4096)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(manifest["embedding"]["dimension"]))
        index = client.prepare_index_params()
        index.add_index("vector", index_type=self.index_type, metric_type="IP", params=self.index_params)
        self._call("creating the collection", client.create_collection, self.collection, schema=schema,
                   index_params=index, properties={_PROPERTY: json.dumps(manifest)})
        self._loaded = False

    def read_manifest(self) -> dict | None:
        if not self.exists():
            return None
        described = self._call("describing the collection", self.client.describe_collection, self.collection)
        raw = (described.get("properties") or {}).get(_PROPERTY)
        if raw is None:
            raise IndexStoreError(f"{self.name} was not made by assistant (no {_PROPERTY} property): pick another "
                                  "ASSISTANT_VECTOR_COLLECTION")
        try:
            manifest = json.loads(raw)
            version = manifest["format_version"]
            manifest["embedding"]["model_id"], manifest["embedding"]["dimension"]  # noqa: B018 (shape check)
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexStoreError(f"the manifest of {self.name} is damaged ({exc.__class__.__name__}): "
                                  f"{_REBUILD}") from exc
        if manifest.get("format") != STORE_FORMAT or version != STORE_FORMAT_VERSION:
            raise IndexStoreError(f"{self.name} has store format {manifest.get('format')!r} version {version!r}; "
                                  f"this program reads {STORE_FORMAT!r} version {STORE_FORMAT_VERSION}: {_REBUILD}")
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        self._call("writing the manifest", self.client.alter_collection_properties, self.collection,
                   properties={_PROPERTY: json.dumps(manifest)})

    # -- rows ---------------------------------------------------------------------------------------
    def count(self) -> int:
        self._ensure_loaded()
        rows = self._call("counting", self.client.query, self.collection, filter="", output_fields=["count(*)"],
                          consistency_level=_CONSISTENCY)
        return int(rows[0]["count(*)"])

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self._ensure_loaded()
        found = self._call("searching", self.client.search, self.collection,
                           data=[np.asarray(query, dtype=np.float32).tolist()], limit=k, anns_field="vector",
                           search_params={"metric_type": "IP", "params": self.search_params}, output_fields=["id"],
                           consistency_level=_CONSISTENCY)
        hits = found[0]
        return (np.fromiter((h["id"] for h in hits), dtype=np.int64, count=len(hits)),
                np.fromiter((h["distance"] for h in hits), dtype=np.float32, count=len(hits)))

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        self._ensure_loaded()
        ids = [int(i) for i in ids]
        got: dict[int, list[float]] = {}
        for a in range(0, len(ids), _BATCH):
            rows = self._call("reading vectors", self.client.get, self.collection, ids=ids[a:a + _BATCH],
                              output_fields=["vector"], consistency_level=_CONSISTENCY)
            got.update((int(r["id"]), r["vector"]) for r in rows)
        missing = [i for i in ids if i not in got]
        if missing:
            raise IndexStoreError(f"{self.name} lacks {len(missing)} of the index's vectors: {_REBUILD}")
        return np.asarray([got[i] for i in ids], dtype=np.float32).reshape(len(ids), -1)

    def add(self, ids: np.ndarray, vectors: np.ndarray, sources: list[str]) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        for a in range(0, len(ids), _BATCH):
            rows = [{"id": int(i), "source": s, "vector": v.tolist()}
                    for i, s, v in zip(ids[a:a + _BATCH], sources[a:a + _BATCH], vectors[a:a + _BATCH], strict=True)]
            self._call("writing vectors", self.client.upsert, self.collection, rows)

    def delete(self, ids: np.ndarray) -> None:
        ids = [int(i) for i in ids]
        for a in range(0, len(ids), _BATCH):
            self._call("deleting vectors", self.client.delete, self.collection, ids=ids[a:a + _BATCH])
        if ids:
            self._until_visible()

    def delete_document(self, source: str) -> None:
        self._call("deleting a document", self.client.delete, self.collection,
                   filter=f"source == {json.dumps(source, ensure_ascii=False)}")
        self._until_visible()

    def _until_visible(self) -> None:
        """Return once reads see the deletes: one Strong read. Session does not wait for them, as a Milvus 2.3
        server's delete reply carries no timestamp (pymilvus keeps the last insert's); Milvus Lite: no wait."""
        self._ensure_loaded()
        self._call("waiting for the delete", self.client.query, self.collection, filter="",
                   output_fields=["count(*)"], consistency_level="Strong")


def _reason(exc: BaseException) -> str:
    """The first line of pymilvus's message, and of the Milvus Lite error under it (e.g. a locked file)."""
    def line(e: BaseException) -> str:
        return (getattr(e, "message", "") or str(e) or e.__class__.__name__).splitlines()[0]

    cause, seen = exc, {id(exc)}
    while cause.__cause__ is not None and id(cause.__cause__) not in seen:  # pymilvus raises `e from e`
        cause = cause.__cause__
        seen.add(id(cause))
    inner = line(cause) if cause is not exc and cause.__class__.__module__.startswith("milvus_lite") else ""
    return line(exc) + (f": {inner}" if inner else "")
