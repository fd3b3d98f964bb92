"""`python -m gateway ...`: the same as the `gateway` command."""

from __future__ import annotations

from gateway.cli import main

if __name__ == "__main__":  # also guards worker processes, which re-import this module under spawn
    raise SystemExit(main())
