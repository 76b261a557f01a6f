"""Summarise a ``py-spy record --format raw`` profile as text tables.

Usage::

    py-spy record --idle --format raw -o /tmp/x.txt -- \
        python benchmarks/_profile_drain.py
    python benchmarks/_spy_summary.py /tmp/x.txt [--only SUBSTRING]

Only stacks containing ``--only`` (default: ``run_once``, i.e. the drain itself)
are counted. Prints the share of samples by self time (leaf function), by
inclusive time (every function on the stack once), and by coarse category.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

_LINE = re.compile(r" \((?P<file>[^():]+):\d+\)$")


def frame_name(frame: str) -> str:
    """``Class.method (path/file.py:123)`` without the line number."""
    return _LINE.sub(lambda match: f" ({match['file']})", frame.strip())


def category(frames: list[str]) -> str:
    leaf = frames[-1]
    if "epoll" in leaf or "select (selectors" in leaf or leaf.startswith("select ("):
        return "idle: waiting in epoll (database round trips)"
    if any("psycopg" in frame for frame in frames):
        if any(
            "fetchall" in frame or "_load_row" in frame or "load_rows" in frame
            for frame in frames
        ):
            return "psycopg: parsing result rows"
        if any("_queries.py" in frame or "dump" in frame for frame in frames):
            return "psycopg: dumping parameters"
        return "psycopg: other (execute, wait, prepare)"
    for frame in reversed(frames):
        if "graphile_worker/" in frame:
            return "worker: " + frame.split(" (")[0]
    if "asyncio/" in leaf:
        return "asyncio machinery"
    return "other: " + leaf.split(" (")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--only", default="run_once")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    categories: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or args.only not in stack:
            continue
        count = int(count_text)
        frames = [frame_name(frame) for frame in stack.split(";")]
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        categories[category(frames)] += count

    if not total:
        raise SystemExit(f"no stacks contain {args.only!r}")

    def show(title: str, counter: collections.Counter[str]) -> None:
        print(f"## {title} ({total} samples)")
        for name, count in counter.most_common(args.top):
            print(f"{100 * count / total:6.1f}%  {name}")
        print()

    show("by category", categories)
    show("self time", self_time)
    show("inclusive time", inclusive)


if __name__ == "__main__":
    main()
