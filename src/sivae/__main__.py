"""``python -m sivae``: the same command line as ``sivae``."""

from __future__ import annotations

import sys

from sivae.cli import main

if __name__ == "__main__":
    sys.exit(main())
