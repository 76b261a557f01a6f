"""Crontabs, read and matched the way graphile-worker 0.18 reads and matches them.

A crontab line is ``MIN HOUR DOM MON DOW task ?options {payload}``, in UTC:

* each time field is a comma separated list of numbers ``n``, ranges ``a-b``
  (``b`` larger than ``a``) and wildcards ``*`` or ``*/n``; ``a-b/n`` is not
  cron syntax here, as it is not in Node's parser. Day of week 7 is Sunday,
  like 0;
* when day of month and day of week are both restricted (a field counts as
  restricted when its values are not all of ``1-31``, or of ``0-6``), a day
  matching either fires; ``*/1`` and ``0-7`` are unrestricted;
* the task identifier starts with a letter or ``_`` and goes on with letters,
  digits and ``_ : / -``;
* options are a query string after ``?``: ``id``, ``fill`` (a time phrase such
  as ``1w2d3h4m5s``), ``max`` (max attempts), ``queue``, ``priority``,
  ``jobKey`` and ``jobKeyMode`` (``replace``, the default with a job key, or
  ``preserve_run_at``);
* the payload is a JSON5 object (:mod:`graphile_worker._json5`).

Blank lines and lines starting with ``#`` are skipped; any other line that does
not parse raises :class:`~graphile_worker.errors.CrontabError` naming it, as do
two items with one identifier (``id``, else the task identifier).

Deliberate differences from Node, each an error here where Node goes on:
option strings with more than 1000 ``&``-separated pairs (Node ignores the
rest), ``max`` outside 1-32767 and ``priority`` outside the smallint range
(which the database would refuse at every run), a ``fill`` longer than
:class:`~datetime.timedelta` can hold, numbers with more than 4000 digits, and
the JSON5 limits listed in :mod:`graphile_worker._json5`.
"""

from __future__ import annotations

import re
from calendar import monthrange
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal

import msgspec

from graphile_worker._cronzone import LONGEST_SHIFT, fires_at, instants, zone_of
from graphile_worker._json5 import WHITESPACE, JSON5Error, loads
from graphile_worker.errors import CrontabError

__all__ = ["CronItem", "JobKeyMode", "cron", "parse_crontab"]

JobKeyMode = Literal["replace", "preserve_run_at"]

MAX_OPTION_PAIRS: Final = 1000  # pieces of an option string Node's parser reads
MAX_DIGITS: Final = 4000  # longest number accepted in an option
_MINUTE: Final = timedelta(minutes=1)
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_LONGEST_MONTH: Final = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # days

# JavaScript's \s, trim() and "." (which matches anything but a line terminator).
_JS_SPACE: Final = "".join(sorted(WHITESPACE))
_S: Final = "[" + re.escape(_JS_SPACE) + "]"
_NOT_S: Final = "[^" + re.escape(_JS_SPACE) + "]"
_DOT: Final = "[^\n\r\u2028\u2029]"
_FIELD: Final = r"([0-9*/,-]+)"
_TIME: Final = rf"{_FIELD}{_S}+{_FIELD}{_S}+{_FIELD}{_S}+{_FIELD}{_S}+{_FIELD}"
_LINE: Final = re.compile(rf"{_TIME}{_S}+({_DOT}*)")
_PATTERN: Final = re.compile(_TIME)
_TASK_CHARS: Final = r"[_a-zA-Z][_a-zA-Z0-9:/-]*"
_TASK: Final = re.compile(_TASK_CHARS)
_COMMAND: Final = re.compile(
    rf"({_TASK_CHARS})(?:{_S}+\?({_NOT_S}+))?(?:{_S}+(\{{{_DOT}*\}}))?"
)
_NUMBER: Final = re.compile(r"[0-9]+")
_RANGE: Final = re.compile(r"([0-9]+)-([0-9]+)")
_WILDCARD: Final = re.compile(r"\*(?:/([0-9]+))?")
_ESCAPES: Final = re.compile(r"(?:%[0-9a-fA-F]{2})+")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_FILL_PART: Final = re.compile(r"([0-9]+)([smhdw])")
_OPTIONS: Final = {
    "id": re.compile(r"[_a-zA-Z][-_a-zA-Z0-9]*"),
    "fill": re.compile(r"(?:[0-9]+[smhdw])+"),
    "max": re.compile(r"[0-9]+"),
    "queue": re.compile(r"[-a-zA-Z0-9_:]+"),
    "jobKey": re.compile(rf"{_DOT}*"),
    "jobKeyMode": re.compile(r"replace|preserve_run_at"),
    "priority": re.compile(r"-?[0-9]+"),
}
# name, lowest, highest of each time field; day of week also takes 7 for Sunday
_FIELDS: Final = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 6),
)
_ALL_DAYS: Final = 31  # values of an unrestricted day of month
_ALL_WEEKDAYS: Final = 7  # values of an unrestricted day of week


class CronItem(msgspec.Struct, frozen=True, kw_only=True):
    """One crontab entry: when it fires and the job it adds.

    The five time fields are sorted tuples of the values they allow; weekdays
    count from 0 for Sunday. Construct items with :func:`parse_crontab` or
    :func:`cron`, which check every field; direct construction checks the time
    fields, ``fill`` and ``job_key_mode``.

    :ivar task: the task identifier of the jobs it adds.
    :ivar identifier: unique within a crontab; the ``id`` option, else ``task``.
    :ivar fill: how far back to backfill missed runs on start (0: none).
    :ivar max_attempts: the jobs' ``max_attempts`` (``max`` option).
    :ivar queue_name: the jobs' queue (``queue`` option).
    :ivar priority: the jobs' priority.
    :ivar job_key: the jobs' job key (``jobKey`` option).
    :ivar job_key_mode: ``replace`` (the default with a job key) or
        ``preserve_run_at``.
    :ivar payload: the jobs' payload, to which the scheduler adds ``_cron``.
    :ivar timezone: an IANA time zone whose wall clock the time fields follow
        (see :mod:`graphile_worker._cronzone`); ``None``, the default, is UTC
        as graphile-worker reads crontabs, so Node agrees on the schedule.
    """

    task: str
    identifier: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    fill: timedelta = timedelta(0)
    max_attempts: int | None = None
    queue_name: str | None = None
    priority: int | None = None
    job_key: str | None = None
    job_key_mode: JobKeyMode | None = None
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    timezone: str | None = None

    def __post_init__(self) -> None:
        fields = (self.minutes, self.hours, self.days, self.months, self.weekdays)
        for values, (name, low, high) in zip(fields, _FIELDS, strict=True):
            if not values or list(values) != sorted(set(values)):
                raise CrontabError(f"{name} values must be sorted, unique, non-empty")
            if values[0] < low or values[-1] > high:
                raise CrontabError(f"{name} values must be in the range {low}-{high}")
        if self.fill < timedelta(0):
            raise CrontabError("fill must not be negative")
        if self.job_key_mode not in (None, "replace", "preserve_run_at"):
            raise CrontabError(f"unknown job_key_mode {self.job_key_mode!r}")
        if self.timezone is not None:
            zone_of(self.timezone)
        # Node accepts these and then fails at every scheduling; refuse early.
        if self.max_attempts is not None and not 1 <= self.max_attempts <= 32767:
            raise CrontabError(f"max must be 1 to 32767, not {self.max_attempts}")
        if self.priority is not None and not -32768 <= self.priority <= 32767:
            raise CrontabError(f"priority must be -32768 to 32767, not {self.priority}")

    @property
    def dom_unrestricted(self) -> bool:
        """Whether the day of month field allows every day, 1-31."""
        return len(self.days) == _ALL_DAYS

    @property
    def dow_unrestricted(self) -> bool:
        """Whether the day of week field allows every weekday."""
        return len(self.weekdays) == _ALL_WEEKDAYS

    @property
    def never_fires(self) -> bool:
        """Whether no date ever matches, as for ``0 0 31 2 *`` (Feb 31)."""
        if not self.dow_unrestricted:
            return False  # every month has every weekday
        return all(self.days[0] > _LONGEST_MONTH[month] for month in self.months)

    def _day_matches(self, day: date) -> bool:
        """Whether ``day`` passes the day of month / day of week rule."""
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = day.isoweekday() % 7 in self.weekdays
        if self.dom_unrestricted:
            return in_weekdays
        if self.dow_unrestricted:
            return in_days
        return in_days or in_weekdays

    def matches(self, moment: datetime) -> bool:
        """Whether the item fires in the UTC minute ``moment`` falls in.

        :param moment: a timezone-aware time; seconds are ignored.
        :raises ValueError: when ``moment`` is naive.
        """
        utc = _as_utc(moment)
        if self.timezone is not None:
            minute = utc.replace(second=0, microsecond=0)
            return fires_at(minute, zone_of(self.timezone), self._wall_matches)

        return self._wall_matches(utc)

    def _wall_matches(self, wall: datetime) -> bool:
        """Whether the fields allow ``wall``'s minute, read off its face."""
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and self._day_matches(wall.date())
        )

    def _dates_from(self, first: date) -> Iterator[date]:
        """The matching dates from ``first`` on, a month at a time."""
        year, month, start = first.year, first.month, first.day
        while year <= date.max.year:
            if month in self.months:
                last = monthrange(year, month)[1]
                for day in range(start, last + 1):
                    candidate = date(year, month, day)
                    if self._day_matches(candidate):
                        yield candidate
            start = 1
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)

    def _walls_from(self, first: datetime) -> Iterator[datetime]:
        """The naive wall-clock minutes the fields allow, from ``first`` on."""
        for day in self._dates_from(first.date()):
            today = day == first.date()
            for hour in self.hours:
                if today and hour < first.hour:
                    continue
                for minute in self.minutes:
                    if today and hour == first.hour and minute < first.minute:
                        continue
                    yield datetime(day.year, day.month, day.day, hour, minute)

    def next_fire_times(self, start: datetime, n: int) -> list[datetime]:
        """The first ``n`` minutes strictly after ``start`` when the item fires.

        Walks matching dates (months outside the item are skipped whole), then
        its hours and minutes; the longest gap any schedule has is the eight
        years between some 29ths of February.

        :param start: a timezone-aware time.
        :param n: how many times to return (``n >= 0``).
        :returns: UTC times at the start of a minute, ascending.
        :raises CrontabError: when the schedule never fires, or fires fewer
            than ``n`` times before the year 10000.
        :raises ValueError: when ``start`` is naive or ``n`` negative.
        """
        if n < 0:
            raise ValueError(f"n must not be negative, not {n}")
        utc = _as_utc(start)
        if self.never_fires:
            raise CrontabError(
                f"cron item {self.identifier!r} never fires: no month it allows "
                f"has day {self.days[0]}"
            )
        found: list[datetime] = []
        if n == 0:
            return found
        if utc >= datetime.max.replace(second=0, microsecond=0, tzinfo=UTC):
            raise CrontabError("no minute after the year 9999 is representable")
        first = utc.replace(second=0, microsecond=0) + _MINUTE
        if self.timezone is None:
            times = (
                wall.replace(tzinfo=UTC)
                for wall in self._walls_from(first.replace(tzinfo=None))
            )
        else:
            zone = zone_of(self.timezone)
            local = first.astimezone(zone).replace(tzinfo=None)
            early = self._walls_from(local - LONGEST_SHIFT)
            times = (moment for moment in instants(early, zone) if moment >= first)
        for moment in times:
            found.append(moment)
            if len(found) == n:
                return found
        raise CrontabError(
            f"cron item {self.identifier!r} fires only {len(found)} of the {n} "
            "times asked for before the year 10000"
        )


def parse_crontab(text: str, *, timezone: str | None = None) -> list[CronItem]:
    """Parse a crontab as graphile-worker 0.18 does.

    Lines are split at ``\\n`` or ``\\r\\n`` and trimmed; blank lines and those
    starting with ``#`` are skipped.

    :param timezone: an IANA time zone for every item (an extension; Node
        reads crontabs in UTC, the default).
    :returns: one item per remaining line, in order.
    :raises CrontabError: for the first line that does not parse, the first
        line whose identifier an earlier line already has, or an unknown zone.
    """
    return [item for _, item in numbered_crontab(text, timezone=timezone)]


def numbered_crontab(
    text: str, *, timezone: str | None = None
) -> list[tuple[int, CronItem]]:
    """Parse a crontab as :func:`parse_crontab` does, keeping line numbers.

    :returns: each item with the number of its line, counted from 1.
    :raises CrontabError: as :func:`parse_crontab`.
    """
    if timezone is not None:
        zone_of(timezone)
    items: list[tuple[int, CronItem]] = []
    seen: dict[str, int] = {}
    duplicate: CrontabError | None = None
    for number, raw in enumerate(re.split(r"\r?\n", text), start=1):
        line = raw.strip(_JS_SPACE)
        if not line or line.startswith("#"):
            continue
        item = _parse_line(line, number)
        if timezone is not None:
            item = msgspec.structs.replace(item, timezone=timezone)
        items.append((number, item))
        first = seen.setdefault(item.identifier, number)
        if first != number and duplicate is None:
            duplicate = CrontabError(
                f"identifier {item.identifier!r} is already used on line {first}; "
                "give one of them a unique '?id=...'",
                line=number,
            )
    if duplicate is not None:
        raise duplicate
    return items


def cron(
    pattern: str,
    task: str,
    *,
    identifier: str | None = None,
    fill: timedelta | str = timedelta(0),
    max_attempts: int | None = None,
    queue_name: str | None = None,
    priority: int | None = None,
    job_key: str | None = None,
    job_key_mode: JobKeyMode | None = None,
    payload: Mapping[str, Any] | None = None,
    timezone: str | None = None,
) -> CronItem:
    """Build a cron item in Python, checked as a crontab line would be.

    ``cron("0 4 * * *", "send_digest", fill=timedelta(hours=2))`` is the item of
    the line ``0 4 * * * send_digest ?fill=2h``.

    :param pattern: the five time fields, separated by whitespace.
    :param task: the task identifier.
    :param identifier: the ``id`` option; defaults to ``task``.
    :param fill: a non-negative timedelta or a time phrase such as ``"1h30m"``.
    :param payload: a JSON-encodable mapping with string keys.
    :param timezone: an IANA time zone whose wall clock the fields follow.
    :raises CrontabError: when any argument would be refused in a crontab.
    """
    matched = _PATTERN.fullmatch(pattern.strip(_JS_SPACE))
    if matched is None:
        raise CrontabError(f"cron pattern {pattern!r} is not five time fields")
    if not _TASK.fullmatch(task):
        raise CrontabError(f"invalid task identifier {task!r}")
    checks = (
        ("id", identifier),
        ("queue", queue_name),
        ("jobKey", job_key),
        ("jobKeyMode", job_key_mode),
        ("fill", fill if isinstance(fill, str) else None),
    )
    for option, value in checks:
        if value is not None and not _OPTIONS[option].fullmatch(value):
            raise CrontabError(f"invalid {option} {value!r}")
    if isinstance(fill, str):
        fill = _fill(fill, None)
    if max_attempts is not None and (type(max_attempts) is not int or max_attempts < 0):
        raise CrontabError(f"max_attempts must be an int >= 0, not {max_attempts!r}")
    if priority is not None and type(priority) is not int:
        raise CrontabError(f"priority must be an int, not {priority!r}")
    data = dict(payload or {})
    if not all(isinstance(key, str) for key in data):
        raise CrontabError("payload keys must be strings")
    try:
        msgspec.json.encode(data)
    except (TypeError, ValueError) as error:
        raise CrontabError(f"payload is not JSON-encodable: {error}") from None
    return CronItem(
        task=task,
        identifier=task if identifier is None else identifier,
        **_time_fields(matched.groups(), None),
        fill=fill,
        max_attempts=max_attempts,
        queue_name=queue_name,
        priority=priority,
        job_key=job_key,
        job_key_mode=job_key_mode or ("replace" if job_key else None),
        payload=data,
        timezone=timezone,
    )


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is needed, not {moment!r}")
    return moment.astimezone(UTC)


def _bounded(digits: str) -> int:
    """The value of ``digits``, or 10**18 for anything at least that large."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= 18 else 10**18


def _time_field(
    text: str, name: str, low: int, high: int, line: int | None
) -> tuple[int, ...]:
    """The sorted values of one time field; see the module docstring."""
    wrap = name == "day of week"  # 7 is Sunday again, like 0
    top = high + 1 if wrap else high
    values: set[int] = set()
    for part in text.split(","):
        if _NUMBER.fullmatch(part):
            ends = [part]
        elif matched := _RANGE.fullmatch(part):
            ends = list(matched.groups())
            if _bounded(ends[1]) <= _bounded(ends[0]):
                raise CrontabError(
                    f"{name} range {part!r} does not end above its start", line=line
                )
        elif matched := _WILDCARD.fullmatch(part):
            step = _bounded(matched[1] or "1")
            if step < 1:
                raise CrontabError(
                    f"{name} step in {part!r} must be 1 or more", line=line
                )
            values.update(range(low, high + 1, step))
            continue
        else:
            raise CrontabError(
                f"{name} {part!r} is not a number, range a-b, * or */n", line=line
            )
        for end in ends:
            if not low <= _bounded(end) <= top:
                raise CrontabError(
                    f"{name} value {end} is outside {low}-{high}", line=line
                )
        first, last = _bounded(ends[0]), _bounded(ends[-1])
        values.update(
            low if value > high else value for value in range(first, last + 1)
        )
    return tuple(sorted(values))


def _time_fields(groups: tuple[str | Any, ...], line: int | None) -> dict[str, Any]:
    names = ("minutes", "hours", "days", "months", "weekdays")
    return {
        key: _time_field(text, name, low, high, line)
        for key, text, (name, low, high) in zip(names, groups, _FIELDS, strict=True)
    }


def _unquote(raw: str, *, key: bool) -> str:
    """Decode one key or value of a query string as Node's ``querystring`` does.

    ``+`` is a space. Node decodes only when it sees ``%XX`` (in a value it
    skips ``+`` while looking), with ``decodeURIComponent``; when that fails,
    it turns each UTF-16 unit into a byte (keeping the low 8 bits, ``%XX``
    decoded) and reads the bytes as UTF-8, with U+FFFD for bad sequences.
    """
    text = raw.replace("+", " ")
    seen = 0  # characters of a "%XX" seen so far
    for char in raw:
        if char == "%":
            seen = 1
        elif seen and char in _HEX:
            seen += 1
            if seen == 3:
                break
        elif char != "+" or key:
            seen = 0
    else:
        return text
    if "%" not in _ESCAPES.sub("", text):  # decodeURIComponent can succeed
        try:
            return _ESCAPES.sub(lambda run: _escaped(run[0]).decode(), text)
        except UnicodeDecodeError:
            pass
    decoded = bytearray()
    position = 0
    for run in _ESCAPES.finditer(text):
        decoded += _low_bytes(text[position : run.start()]) + _escaped(run[0])
        position = run.end()
    decoded += _low_bytes(text[position:])
    return decoded.decode("utf-8", "replace")


def _escaped(run: str) -> bytes:
    """The bytes of a run of ``%XX`` escapes."""
    return bytes.fromhex(run.replace("%", ""))


def _low_bytes(text: str) -> bytes:
    """The low 8 bits of each UTF-16 unit of ``text``."""
    return text.encode("utf-16-le", "surrogatepass")[::2]


def _fill(phrase: str, line: int | None) -> timedelta:
    seconds = 0
    for quantity, unit in _FILL_PART.findall(phrase):
        if len(quantity.lstrip("0")) > 15:
            raise CrontabError(f"fill {phrase!r} is too long", line=line)
        seconds += int(quantity) * _UNIT_SECONDS[unit]
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise CrontabError(f"fill {phrase!r} is too long", line=line) from None


def _parse_options(text: str | None, line: int) -> dict[str, Any]:
    """The CronItem arguments that the options after ``?`` give."""
    pieces = [] if text is None else text.split("&")
    if any(pieces[MAX_OPTION_PAIRS:]):
        raise CrontabError(
            f"options have more than {MAX_OPTION_PAIRS} '&'-separated parts", line=line
        )
    given: dict[str, list[str]] = {}
    for piece in pieces:
        if piece:
            key, _, value = piece.partition("=")
            given.setdefault(_unquote(key, key=True), []).append(
                _unquote(value, key=False)
            )
    found: dict[str, Any] = {}
    for key, values in given.items():
        if key not in _OPTIONS:
            raise CrontabError(
                f"unknown option {key!r}; the options are: {', '.join(_OPTIONS)}",
                line=line,
            )
        if len(values) > 1:
            raise CrontabError(f"option {key!r} is given more than once", line=line)
        (value,) = values
        if not _OPTIONS[key].fullmatch(value):
            raise CrontabError(f"invalid value {value!r} for option {key!r}", line=line)
        if key in ("max", "priority") and len(value) > MAX_DIGITS:
            raise CrontabError(f"option {key!r} has too many digits", line=line)
        found[key] = value
    job_key = found.get("jobKey")
    return {
        "identifier": found.get("id"),
        "fill": _fill(found.get("fill", ""), line),
        "max_attempts": int(found["max"]) if "max" in found else None,
        "queue_name": found.get("queue"),
        "priority": int(found["priority"]) if "priority" in found else None,
        "job_key": job_key,
        "job_key_mode": found.get("jobKeyMode") or ("replace" if job_key else None),
    }


def _parse_line(line: str, number: int) -> CronItem:
    """One trimmed, non-comment crontab line as a CronItem."""
    matched = _LINE.fullmatch(line)
    if matched is None:
        raise CrontabError(
            f"expected five time fields, a task identifier, then optionally "
            f"'?options' and a JSON5 payload: {line!r}",
            line=number,
        )
    fields = _time_fields(matched.groups()[:5], number)
    command = _COMMAND.fullmatch(matched[6])
    if command is None:
        raise CrontabError(
            f"invalid task identifier, options or payload: {matched[6]!r} (the task "
            "identifier takes letters, digits and _ : / -; options follow '?' "
            "with no spaces; the payload is one {...} object)",
            line=number,
        )
    task, options_text, payload_text = command.groups()
    options = _parse_options(options_text, number)
    payload: dict[str, Any] = {}
    if payload_text:
        try:
            payload = loads(payload_text)
        except JSON5Error as error:
            raise CrontabError(f"invalid JSON5 payload: {error}", line=number) from None
    identifier = options.pop("identifier") or task
    try:
        return CronItem(
            task=task, identifier=identifier, **fields, **options, payload=payload
        )
    except CrontabError as error:
        raise CrontabError(str(error), line=number) from None
