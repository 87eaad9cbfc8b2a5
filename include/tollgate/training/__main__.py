"""``python -m tollgate.training``: the training container's entrypoint (see settings.py for args)."""

from __future__ import annotations

import os
import sys

# Deterministic cuBLAS needs this before CUDA initialises (harmless on CPU).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from tollgate.training import exit_codes
from tollgate.training.cli import main

if __name__ == "__main__":
    code = main()
    if code == exit_codes.PREEMPTED:
        # Everything durable is written (checkpoint fsynced, manifest, ledger, MLflow). Skip the
        # interpreter's teardown of torch & co., which takes seconds, out of a short grace period.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
