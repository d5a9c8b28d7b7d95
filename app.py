"""Start the assistant over the built index: an interactive session on the terminal."""
from __future__ import annotations

import sys

from assistant.cli import main

if __name__ == "__main__":
    sys.exit(main(["chat", *sys.argv[1:]]))
