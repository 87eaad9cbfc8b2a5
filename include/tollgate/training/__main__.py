"""``python -m tollgate.training``: the training container's entrypoint (see settings.py for args)."""

from __future__ import annotations

import os
import sys

# Deterministic cuBLAS needs this before CUDA initialises (harmless on CPU).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from tollgate.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
