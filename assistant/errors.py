"""Errors a user can act on. Each message says what went wrong and what to do."""
from __future__ import annotations


class AssistantError(Exception):
    """Base class: the CLI and UI turn these into one clear line (exit code 2)."""


class ConfigError(AssistantError):
    """A setting or argument is invalid."""


class ModelError(AssistantError):
    """A model is missing, corrupt or cannot be loaded."""


class IngestError(AssistantError):
    """A document cannot be read (empty, binary, corrupt, unsupported)."""


class IndexStoreError(AssistantError):
    """The index folder is missing, damaged, foreign or built with another model."""


class NoIndexError(IndexStoreError):
    """There is no index yet: the index folder, or its manifest.json, does not exist."""


class QuestionError(AssistantError):
    """The question is empty or unusable."""

