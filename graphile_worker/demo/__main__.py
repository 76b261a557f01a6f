"""``python -m graphile_worker.demo``: the same as ``graphile-worker demo``."""

from __future__ import annotations

import sys

from graphile_worker.demo.command import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
