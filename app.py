"""Start the chat UI, the HTTP API and the OpenAI-compatible endpoint on http://127.0.0.1:7860 (ASSISTANT_HOST /
ASSISTANT_PORT to change it) over the built index."""
from __future__ import annotations

import logging

from assistant.config import Settings, quiet_openmp
from assistant.pipeline import Assistant
from assistant.api import serve

if __name__ == "__main__":
    quiet_openmp()  # before torch / faiss load (both are imported lazily): see assistant/config.py
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("assistant").setLevel(logging.INFO)
    settings = Settings.from_env()
    serve(Assistant(settings), settings)
