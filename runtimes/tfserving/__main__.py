"""`python -m runtimes.tfserving`: see `runtimes.tfserving.cli`."""

from __future__ import annotations

import os
import sys

# Before TensorFlow is imported: its C++ INFO/WARNING lines would drown the runtime's own log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from runtimes.tfserving.cli import main

if __name__ == "__main__":
    sys.exit(main())
