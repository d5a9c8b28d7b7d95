"""assistant: offline question answering over a folder of documents, with exact citations.

Nothing heavy is imported here: models load on first use.
"""
from __future__ import annotations

from .config import Settings
from .types import Answer, Chunk, Citation, Document, Hit, IndexedDocument, IndexStatus, Why

__all__ = ["AddReport", "Answer", "Assistant", "Chunk", "Citation", "Document", "Hit", "IndexStatus", "IndexedDocument",
           "RemoveReport", "Settings", "Why"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("Assistant", "AddReport", "RemoveReport"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
