"""Pairs of async and blocking primitives that the generated sync code swaps in.

An async module uses the ``A``-prefixed name (``AEvent``, ``ALock``, ``asleep``);
``tools/async_to_sync.py`` renames it to the blocking twin in the sync module.
"""

from __future__ import annotations

import threading
import time

import anyio

AEvent = anyio.Event
ALock = anyio.Lock
Event = threading.Event
Lock = threading.Lock

asleep = anyio.sleep
sleep = time.sleep

__all__ = ["AEvent", "ALock", "Event", "Lock", "asleep", "sleep"]
