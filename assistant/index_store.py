"""The index folder on disk: build atomically, load, check the manifest. No pickle anywhere.

This module only gathers the public names; the work is done in

- ``manifest.py``: the typed ``Manifest``, its checks, ``check_compatible`` and the file names;
- ``index_load.py``: ``load_index`` and the query-time ``LoadedIndex``;
- ``index_build.py``: ``build_index``, with a ``DocumentPlan`` per document saying what it reuses;
- ``generations.py``: the build lock, the atomic swap of ``manifest.json`` (fsync) and cleanup.

docs/index-format.md describes every file of an index folder and its format version.
"""
from __future__ import annotations

from .generations import build_lock
from .index_build import BuildReport, DocumentPlan, Progress, build_index, plan_documents
from .index_load import LoadedIndex, UnitVectors, load_index
from .manifest import FORMAT, FORMAT_VERSION, MANIFEST, Manifest, check_compatible, chunker_id, read_manifest

__all__ = ["BuildReport", "DocumentPlan", "FORMAT", "FORMAT_VERSION", "LoadedIndex", "MANIFEST", "Manifest",
           "Progress", "UnitVectors", "build_index", "build_lock", "check_compatible", "chunker_id",
           "load_index", "plan_documents", "read_manifest"]
