"""``python -m graphile_worker``: the same command as ``graphile-worker``."""

from __future__ import annotations

import sys

from graphile_worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
