"""The command line's crontab support: ``crontab check FILE`` and ``--crontab``.

``crontab check`` prints each item's next fire times (worked out here from the
calendar) and exits 0, or exits 2 naming the first line that does not parse,
or each line whose item can never fire (told here by the calendar).
A worker given ``--crontab`` refuses a bad file with exit status 2 before it
connects, and with a good one registers the items as soon as it runs (the
scheduler runs with ``run``, not with ``--once``).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from calendar import isleap, monthrange
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.test_cli import (
    BAD_DSN,
    EXIT_TIMEOUT,
    READY_TIMEOUT,
    TESTS_DIR,
    _env,
    one_error_line,
    query,
    run_cli,
)

EXIT_USAGE = 2
MINUTE = timedelta(minutes=1)
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")
CRONTAB = """\
# every quarter of an hour, and two rare ones
*/15 * * * * quarter ?id=q15&fill=1h {n: 1}

0 0 1 1 * new_year
30 2 29 2 * leap_day ?max=3
"""
BAD_LINE = 4
BAD_CRONTAB = """\
*/15 * * * * quarter
# a comment

61 * * * * too_late
0 * * * * never_read
"""


def first_minute_after(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + MINUTE


def quarters(after: datetime, count: int) -> list[datetime]:
    first = first_minute_after(after)
    first += timedelta(minutes=-first.minute % 15)
    return [first + n * timedelta(minutes=15) for n in range(count)]


def new_years(after: datetime, count: int) -> list[datetime]:
    return [datetime(after.year + n, 1, 1, tzinfo=UTC) for n in range(1, count + 1)]


def leap_days(after: datetime, count: int) -> list[datetime]:
    found: list[datetime] = []
    year = after.year
    while len(found) < count:
        if isleap(year):
            moment = datetime(year, 2, 29, 2, 30, tzinfo=UTC)
            if moment >= first_minute_after(after):
                found.append(moment)
        year += 1
    return found


def shown(stdout: str) -> dict[str, list[str]]:
    """The times printed on each item's line, by the identifier it starts with."""
    lines = stdout.splitlines()
    return {
        identifier: STAMP.findall(line)
        for identifier in ("q15", "new_year", "leap_day")
        for line in lines
        if line.startswith(identifier)
    }


def expected(after: datetime, count: int) -> dict[str, list[str]]:
    return {
        identifier: [moment.strftime("%Y-%m-%d %H:%M") for moment in moments]
        for identifier, moments in (
            ("q15", quarters(after, count)),
            ("new_year", new_years(after, count)),
            ("leap_day", leap_days(after, count)),
        )
    }


@pytest.mark.parametrize("count", [None, 5])
def test_crontab_check_prints_each_items_next_times(
    tmp_path: Path, count: int | None
) -> None:
    path = tmp_path / "crontab"
    path.write_text(CRONTAB)
    extra = [] if count is None else ["-n", str(count)]
    before = datetime.now(UTC)
    result = run_cli("crontab", "check", str(path), *extra)
    after = datetime.now(UTC)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    times = shown(result.stdout)
    wanted = count or 3
    assert times in (expected(before, wanted), expected(after, wanted))
    assert "3 items" in result.stdout.splitlines()[-1]


def test_crontab_check_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "crontab"
    path.write_text(BAD_CRONTAB)
    result = run_cli("crontab", "check", str(path))
    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""
    line = one_error_line(result)
    assert f"line {BAD_LINE}" in line
    assert str(path) in line


def day_ever_comes(day: int, months: list[int]) -> bool:
    """Whether some month of ``months`` has a ``day``, over a whole leap cycle."""
    return any(
        day <= monthrange(year, month)[1]
        for year in range(2000, 2400)
        for month in months
    )


NEVER_CRONTAB = """\
*/15 * * * * quarter
0 0 30 2 * feb30
# Mondays of February still fire: both day fields are restricted
0 0 31 2 1 mondays
0 0 31 4,6,9,11 * short ?id=short31

0 0 29 2 * leap
"""
# line number, identifier, day of month, months: the day-restricted items above
DAY_ITEMS = [
    (2, "feb30", 30, [2]),
    (5, "short31", 31, [4, 6, 9, 11]),
    (7, "leap", 29, [2]),
]


def test_crontab_check_names_each_line_that_can_never_fire(tmp_path: Path) -> None:
    path = tmp_path / "crontab"
    path.write_text(NEVER_CRONTAB)
    never = [
        (number, identifier)
        for number, identifier, day, months in DAY_ITEMS
        if not day_ever_comes(day, months)
    ]
    assert [number for number, _ in never] == [2, 5]

    result = run_cli("crontab", "check", str(path))

    assert result.returncode == EXIT_USAGE
    errors = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert len(errors) == len(never), result.stderr
    for line, (number, identifier) in zip(errors, never, strict=True):
        assert line.startswith(f"graphile-worker: error: {path}: line {number}: ")
        assert f"{identifier!r} never fires" in line

    printed = [line.split(" ")[0] for line in result.stdout.splitlines()]
    assert printed == ["quarter", "mondays", "leap"]
    assert "all valid" not in result.stdout


@pytest.mark.parametrize(
    ("fields", "day", "months"),
    [
        ("0 0 30 2 *", 30, [2]),
        ("0 0 31 4 *", 31, [4]),
        ("0 0 30,31 2 *", 30, [2]),
        ("0 0 29 2 *", 29, [2]),
        ("0 0 31 2,4,7 *", 31, [2, 4, 7]),
        ("0 0 30-31 2,4 *", 30, [2, 4]),
    ],
)
def test_crontab_check_fails_exactly_when_the_day_never_comes(
    tmp_path: Path, fields: str, day: int, months: list[int]
) -> None:
    path = tmp_path / "crontab"
    path.write_text(f"# one item\n\n{fields} only\n")

    result = run_cli("crontab", "check", str(path))

    if day_ever_comes(day, months):
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert len(STAMP.findall(result.stdout)) == 3
    else:
        assert result.returncode == EXIT_USAGE
        assert result.stdout == ""
        assert f"{path}: line 3: " in one_error_line(result)


def test_crontab_check_names_a_reused_identifier(tmp_path: Path) -> None:
    path = tmp_path / "crontab"
    path.write_text("0 * * * * a\n0 * * * * b ?id=a\n")
    result = run_cli("crontab", "check", str(path))
    assert result.returncode == EXIT_USAGE
    line = one_error_line(result)
    assert "line 2" in line and "'a'" in line


def test_crontab_check_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing"
    result = run_cli("crontab", "check", str(path))
    assert result.returncode == EXIT_USAGE
    assert str(path) in one_error_line(result)


def test_a_bad_crontab_fails_before_connecting(tmp_path: Path) -> None:
    path = tmp_path / "crontab"
    path.write_text(BAD_CRONTAB)
    result = run_cli("-c", BAD_DSN, "--tasks", "cli_tasks", "--crontab", str(path))
    assert result.returncode == EXIT_USAGE
    assert f"line {BAD_LINE}" in one_error_line(result)


def test_a_bad_crontab_stops_the_worker_before_it_migrates(
    empty_db_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "crontab"
    path.write_text(BAD_CRONTAB)
    result = run_cli("-c", empty_db_dsn, "--tasks", "cli_tasks", "--crontab", str(path))
    assert result.returncode == EXIT_USAGE
    assert f"line {BAD_LINE}" in one_error_line(result)
    schemas = query(
        empty_db_dsn,
        "select count(*) from pg_namespace where nspname = 'graphile_worker'",
    )
    assert schemas == [(0,)]


def known(dsn: str) -> list[tuple[object, ...]]:
    return query(
        dsn,
        "select identifier, last_execution from graphile_worker._private_known_crontabs"
        " order by identifier",
    )


@pytest.mark.parametrize("threaded", [False, True], ids=["async", "threaded"])
def test_a_running_worker_registers_its_crontab(
    db_dsn: str, tmp_path: Path, threaded: bool
) -> None:
    path = tmp_path / "crontab"
    path.write_text(CRONTAB)
    once = run_cli(
        "-c", db_dsn, "--tasks", "cli_tasks", "--once", "--crontab", str(path)
    )
    assert once.returncode == 0, once.stderr
    assert known(db_dsn) == []  # no scheduler with --once

    if threaded:
        tasks = ["--threaded", "--tasks", "cli_tasks:SYNC_TASKS"]
    else:
        tasks = ["--tasks", "cli_tasks"]
    command = [sys.executable, "-m", "graphile_worker", "-c", db_dsn, "-q", *tasks]
    log_path = tmp_path / "stderr.log"
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            [*command, "--crontab", str(path)],
            cwd=TESTS_DIR,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
        ) as process,
    ):
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while len(known(db_dsn)) < 3:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the crontab was not registered"
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=EXIT_TIMEOUT) == 0, log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()

    rows = known(db_dsn)
    assert [row[0] for row in rows] == ["leap_day", "new_year", "q15"]
    # Registered, not run: a worker stopped within a quarter of an hour may
    # have added the quarter's job, never the rare ones.
    assert rows[0][1] is None and rows[1][1] is None
