"""Cron items in a local time zone, with daylight saving handled.

graphile-worker reads crontabs in UTC only; an item with a time zone is our
extension. Its fields are read as wall-clock time in that zone:

- a wall-clock minute that happens twice (clocks going back) fires once, at
  its first occurrence;
- a wall-clock minute that does not happen (clocks going forward) fires at the
  first minute after the gap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from graphile_worker.errors import CrontabError

MINUTE = timedelta(minutes=1)
LONGEST_SHIFT = timedelta(hours=3)  # more than any offset change on record

WallMatch = Callable[[datetime], bool]


@cache
def zone_of(name: str) -> ZoneInfo:
    """The IANA time zone called ``name``.

    :raises CrontabError: no such zone in this system's time zone database.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CrontabError(f"unknown time zone {name!r}") from exc


def _repeated(local: datetime) -> bool:
    """Whether ``local`` is the second occurrence of a repeated wall time."""
    return local.fold == 1 and (
        local.replace(fold=0).utcoffset() != local.utcoffset()
    )


def fires_at(minute: datetime, zone: ZoneInfo, wall_matches: WallMatch) -> bool:
    """Whether an item with these wall-clock fields fires at UTC ``minute``."""
    local = minute.astimezone(zone)
    if _repeated(local):
        return False

    if wall_matches(local):
        return True

    # Clocks went forward into this minute: it also fires for the skipped ones.
    skipped = (minute - MINUTE).astimezone(zone).replace(tzinfo=None) + MINUTE
    arrived = local.replace(tzinfo=None)
    while skipped < arrived:
        if wall_matches(skipped):
            return True

        skipped += MINUTE

    return False


def instant_of(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC minute at which the naive wall-clock minute ``wall`` fires."""
    first = wall.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return first.astimezone(UTC)

    # ``wall`` falls in a gap: fire at the first minute that exists after it.
    moment = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    while moment.astimezone(zone).replace(tzinfo=None) < wall:
        moment += MINUTE

    return moment


def instants(walls: Iterator[datetime], zone: ZoneInfo) -> Iterator[datetime]:
    """Map ascending wall-clock minutes to their distinct UTC fire minutes."""
    last: datetime | None = None
    for wall in walls:
        moment = instant_of(wall, zone)
        if last is None or moment > last:
            last = moment
            yield moment
