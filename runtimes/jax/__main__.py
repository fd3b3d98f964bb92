"""`python -m runtimes.jax`: see `runtimes.jax.cli`."""

from __future__ import annotations

import sys

from runtimes.jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
