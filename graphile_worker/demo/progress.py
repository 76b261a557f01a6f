"""The live progress of the demo's jobs: one rewritten line, or a line a second."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Final

from graphile_worker.demo.console import columns, out

PLAIN_PROGRESS_EVERY: Final = 1.0  # seconds between lines when not on a terminal
SHORT_NAMES: Final = {
    "send_welcome_email": "email",
    "greet_user": "greet",
    "bank_transfer": "transfer",
    "flaky_report": "report",
    "index_documents": "index",
}


class Progress:
    """Shows counts per task: one rewritten line on a terminal, else a line a second.

    :param totals: the jobs per task.
    :param interactive: rewrite one line (stdout is a terminal, no logs).
    """

    def __init__(self, totals: Mapping[str, int], *, interactive: bool) -> None:
        self._totals = totals
        self._interactive = interactive
        self._last = 0.0
        self._shown = False

    def _line(self, finished: Mapping[str, int], retries: int, elapsed: float) -> str:
        total = sum(self._totals.values())
        done = sum(finished.get(name, 0) for name in self._totals)
        head = f"{elapsed:5.1f}s  {done:3d}/{total} jobs"
        tail = f"  retries {retries}"
        width = columns() - 1
        for names in (None, SHORT_NAMES):
            counts = "  ".join(
                f"{(names or {}).get(name, name)} {finished.get(name, 0)}/{count}"
                for name, count in self._totals.items()
            )
            line = f"{head}  |  {counts}{tail}"
            if not self._interactive or len(line) <= width:
                return line

        return line[:width]

    def update(
        self,
        finished: Mapping[str, int],
        retries: int,
        elapsed: float,
        *,
        final: bool = False,
    ) -> None:
        """Show the counts: always on a terminal, else once a second (and last)."""
        line = self._line(finished, retries, elapsed)
        if self._interactive:
            sys.stdout.write(f"\r\x1b[2K{line}")
            sys.stdout.flush()
            self._shown = True
        elif final or time.monotonic() - self._last >= PLAIN_PROGRESS_EVERY:
            self._last = time.monotonic()
            out(f"  progress {line}")

    def close(self) -> None:
        """End the rewritten line."""
        if self._shown:
            out()
            self._shown = False


__all__ = ["Progress"]
