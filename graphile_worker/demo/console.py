"""The demo's terminal output: whole lines, and paragraphs wrapped to fit."""

from __future__ import annotations

import shutil
import sys
import textwrap
from typing import Final

MAX_WIDTH: Final = 100  # characters, the widest the summary's lines get


def out(text: str = "") -> None:
    """Write ``text`` and a newline to stdout, and flush it."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def columns() -> int:
    """The terminal's width, or MAX_WIDTH when stdout is not a terminal."""
    return shutil.get_terminal_size((MAX_WIDTH, 20)).columns


def say(text: str, *, indent: str = "", hang: str = "  ") -> None:
    """Write a paragraph wrapped to the terminal (at most MAX_WIDTH columns).

    :param indent: the first line's prefix.
    :param hang: what the next lines add to an indent as wide as ``indent``.
    """
    out(
        textwrap.fill(
            text,
            width=min(columns(), MAX_WIDTH) - 1,
            initial_indent=indent,
            subsequent_indent=" " * len(indent) + hang,
            break_on_hyphens=False,
        )
    )


__all__ = ["MAX_WIDTH", "columns", "out", "say"]
