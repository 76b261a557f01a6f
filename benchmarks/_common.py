"""Shared helpers for the benchmark scripts in this folder.

Every script takes ``--dsn`` (default ``$GRAPHILE_WORKER_BENCH_DSN``, else
``$DATABASE_URL``, else the embedded PostgreSQL of ``graphile_worker.embedded``),
``--jobs N`` and ``--quick``, runs each variant in a fresh ``bench_*`` database
that it creates and drops, and prints the machine description and one table.

Node's graphile-worker is installed once with npm into
``<tempdir>/graphile_worker-node-0.18.0`` (the folder the test suite uses too)
and reused by later runs; Node scripts are ES modules written to a temporary
folder that import the installed package by absolute path.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from graphile_worker import RawJob, WorkerUtils

DSN_ENV_VARS = ("GRAPHILE_WORKER_BENCH_DSN", "DATABASE_URL")
NODE_VERSION = "0.18.0"
NPM_TIMEOUT = 600.0  # seconds for one npm install
DB_PREFIX = "bench_"
BENCH_DIR = Path(__file__).resolve().parent


# -- command line --------------------------------------------------------------


@dataclass(frozen=True)
class Args:
    """The options every benchmark script takes."""

    dsn: str | None
    jobs: int
    quick: bool
    extra: argparse.Namespace


def parse_args(
    description: str,
    *,
    default_jobs: int,
    quick_jobs: int,
    argv: Sequence[str] | None = None,
    extra: Sequence[tuple[Sequence[str], dict[str, Any]]] = (),
) -> Args:
    """Parse ``[--dsn DSN] [--jobs N] [--quick]`` and any script-specific options.

    :param description: the script's one-line description.
    :param default_jobs: ``--jobs`` without ``--quick``.
    :param quick_jobs: ``--jobs`` with ``--quick`` (an explicit ``--jobs`` wins).
    :param extra: ``(flags, add_argument kwargs)`` pairs for more options.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--dsn",
        help="server to benchmark on (default: $GRAPHILE_WORKER_BENCH_DSN, else "
        "$DATABASE_URL, else the embedded PostgreSQL); scratch databases named "
        f"{DB_PREFIX}* are created on it and dropped",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=f"jobs per variant (default: {default_jobs}, {quick_jobs} with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run (~30 s)"
    )
    for flags, kwargs in extra:
        parser.add_argument(*flags, **kwargs)

    namespace = parser.parse_args(argv)
    jobs = namespace.jobs or (quick_jobs if namespace.quick else default_jobs)
    if jobs < 1:
        parser.error("--jobs must be 1 or more")

    return Args(dsn=namespace.dsn, jobs=jobs, quick=namespace.quick, extra=namespace)


# -- servers and databases -----------------------------------------------------


@contextlib.contextmanager
def server(args: Args) -> Iterator[str]:
    """Yield the server DSN to benchmark on, starting the embedded one if none."""
    dsn = args.dsn or next(
        (os.environ[name] for name in DSN_ENV_VARS if os.environ.get(name)), None
    )
    if dsn:
        yield dsn
        return

    from graphile_worker.embedded import start_embedded

    embedded = start_embedded()
    try:
        yield embedded.dsn
    finally:
        embedded.stop()


def database_name(dsn: str) -> str:
    """The database a DSN points at (libpq's default: the user name)."""
    params = conninfo_to_dict(dsn)
    return str(params.get("dbname") or params.get("user") or "postgres")


@contextlib.contextmanager
def fresh_database(server_dsn: str, label: str) -> Iterator[str]:
    """Create ``bench_<label>_<random>``, yield its DSN, drop it afterwards."""
    name = f"{DB_PREFIX}{label}_{secrets.token_hex(3)}"[:63]
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))

    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(
                    sql.Identifier(name)
                )
            )


def migrate(dsn: str) -> None:
    """Install the graphile_worker schema."""
    with WorkerUtils(dsn=dsn) as utils:
        utils.migrate()


def add_jobs(dsn: str, identifier: str, count: int, *, start: int = 0) -> float:
    """Add ``count`` jobs ``{"n": i}`` in one ``add_raw_jobs``; return seconds taken."""
    jobs = [
        RawJob(identifier=identifier, payload={"n": i})
        for i in range(start, start + count)
    ]
    with WorkerUtils(dsn=dsn) as utils:
        began = time.perf_counter()
        utils.add_raw_jobs(jobs)
        return time.perf_counter() - began


def analyze(dsn: str) -> None:
    """Refresh the planner statistics of the jobs table, as every variant does."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("analyze graphile_worker._private_jobs")


def jobs_left(dsn: str) -> int:
    """Rows left in the jobs table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from graphile_worker._private_jobs"
        ).fetchone()
        assert row is not None
        return int(row[0])


def server_version(dsn: str) -> str:
    """The server's ``version()``, shortened to its first words."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select version()").fetchone()
        assert row is not None
        return " ".join(str(row[0]).split()[:2])


def server_settings(dsn: str) -> str:
    """The settings that matter most to a write-heavy queue."""
    names = ("synchronous_commit", "fsync", "shared_buffers", "max_connections")
    with psycopg.connect(dsn, autocommit=True) as conn:
        values = []
        for name in names:
            show = sql.SQL("show {}").format(sql.Identifier(name))
            row = conn.execute(show).fetchone()
            values.append(f"{name}={row[0] if row else '?'}")
    return ", ".join(values)


# -- Node ----------------------------------------------------------------------


def node_cache_folder() -> Path:
    """Where Node's graphile-worker goes: ``<tempdir>/graphile_worker-node-<v>``."""
    return Path(tempfile.gettempdir()) / f"graphile_worker-node-{NODE_VERSION}"


def node_install() -> Path:
    """Install graphile-worker@0.18.0 once; return its ``dist/index.js``.

    :raises RuntimeError: node or npm is missing, or npm failed.
    """
    folder = node_cache_folder()
    package = folder / "node_modules" / "graphile-worker"
    manifest = package / "package.json"
    if (
        manifest.exists()
        and json.loads(manifest.read_text()).get("version") == NODE_VERSION
    ):
        return package / "dist" / "index.js"

    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed")

    staging = Path(tempfile.mkdtemp(prefix=f"{folder.name}-", dir=folder.parent))
    (staging / "package.json").write_text('{"private": true}\n')
    done = subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            f"graphile-worker@{NODE_VERSION}",
        ],
        cwd=staging,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(
            f"npm install graphile-worker@{NODE_VERSION}: {' / '.join(tail)}"
        )

    shutil.rmtree(folder, ignore_errors=True)
    try:
        staging.rename(folder)
    except OSError:  # another run installed it first
        shutil.rmtree(staging, ignore_errors=True)

    return package / "dist" / "index.js"


def node_available() -> str | None:
    """Why Node cannot be benchmarked, or ``None`` when it can (installing it)."""
    try:
        node_install()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)

    return None


def node_version() -> str:
    """``node --version``, or ``absent``."""
    if shutil.which("node") is None:
        return "absent"

    done = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def node_dsn(dsn: str) -> str:
    """The connection string node-postgres understands for a libpq DSN."""
    params = conninfo_to_dict(dsn)
    auth = quote(str(params.get("user") or "postgres"), safe="")
    if params.get("password"):
        auth += ":" + quote(str(params["password"]), safe="")

    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or 5432)
    dbname = quote(str(params.get("dbname") or "postgres"), safe="")
    return f"postgres://{auth}@/{dbname}?host={quote(host, safe='')}&port={port}"


# Imports graphile-worker by absolute path, defines a logger that drops
# everything below warnings, and runUntilStopped(taskList): a worker with the
# options in $GW_OPTIONS until SIGTERM. Prepended to every Node script.
NODE_PRELUDE = """\
import { pathToFileURL } from "node:url";
const gw = await import(pathToFileURL(process.env.GW_INDEX).href);
const quietLogger = new gw.Logger((scope) => (level, message) => {
  if (level === "error" || level === "warning") console.error(`[${level}] ${message}`);
});
const wallMs = () => performance.timeOrigin + performance.now();
const emit = (value) => process.stdout.write(JSON.stringify(value) + "\\n");
const runUntilStopped = async (taskList) => {
  const runner = await gw.run({
    connectionString: process.env.DATABASE_URL,
    taskList,
    logger: quietLogger,
    noHandleSignals: true,
    ...JSON.parse(process.env.GW_OPTIONS),
  });
  process.on("SIGTERM", async () => { await runner.stop(); process.exit(0); });
  await runner.promise;
};
"""


@contextlib.contextmanager
def node_script(source: str) -> Iterator[Path]:
    """Write ``NODE_PRELUDE + source`` to a temporary ``.mjs`` file; yield its path."""
    folder = Path(tempfile.mkdtemp(prefix="graphile_worker-bench-"))
    path = folder / "bench.mjs"
    path.write_text(NODE_PRELUDE + source)
    try:
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def node_env(dsn: str, **extra: str) -> dict[str, str]:
    """The environment a Node script runs with."""
    return {
        **os.environ,
        "GW_INDEX": str(node_install()),
        "DATABASE_URL": node_dsn(dsn),
        **extra,
    }


def run_node(source: str, dsn: str, *, timeout: float = 600.0, **env: str) -> Any:
    """Run a Node script to completion; return the JSON of its last stdout line.

    :raises RuntimeError: the script failed or printed nothing.
    """
    with node_script(source) as path:
        done = subprocess.run(
            ["node", str(path)],
            env=node_env(dsn, **env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"node script exited {done.returncode}: {done.stderr.strip()[-2000:]}"
        )

    return json.loads(lines[-1])


# -- measuring and printing ----------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100), nearest-rank."""
    ordered = sorted(values)
    if not ordered:
        return math.nan

    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo, else the platform's processor name."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()

    return platform.processor() or "unknown"


def revision() -> str:
    """The repository's commit, ``-dirty`` when the work tree has changes."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"

    return done.stdout.strip() or "unknown"


def describe(dsn: str, title: str, notes: Sequence[str] = ()) -> None:
    """Print the title, date, machine, Python, Node and PostgreSQL versions."""
    print(f"# {title}")
    print(f"date:       {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %z}")
    system = f"{platform.system()} {platform.release()}"
    print(f"machine:    {cpu_model()}, {os.cpu_count()} cores, {system}")
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(f"load avg:   {load} (before start)")
    python = f"{platform.python_version()} ({sys.executable})"
    print(f"python:     {python}, psycopg {psycopg.__version__}")
    print(f"ours:       graphile_worker at {revision()}")
    print(f"node:       {node_version()}, graphile-worker {NODE_VERSION}")
    print(f"postgresql: {server_version(dsn)} ({server_settings(dsn)})")
    for note in notes:
        print(f"note:       {note}")
    print()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format rows as a Markdown table; numbers are right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [
        max([len(header)] + [len(row[i]) for row in cells])
        for i, header in enumerate(headers)
    ]
    numeric = [
        all(_is_number(row[i]) for row in cells if row[i]) and bool(cells)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (width + 1) + (":" if right else "-")
            for width, right in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(row) for row in cells)])


def _is_number(text: str) -> bool:
    cleaned = text.rstrip("x%").replace(",", "").replace("+", "")
    try:
        float(cleaned)
    except ValueError:
        return False

    return True


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print rows as a Markdown table."""
    print(table(headers, rows))
    sys.stdout.flush()


def progress(message: str) -> None:
    """Say what is running, on stderr, so stdout holds only the report."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def fmt_rate(value: float) -> str:
    """A rate rounded to whole units with thousands separators."""
    return f"{value:,.0f}" if math.isfinite(value) else "-"


def fmt_ratio(value: float) -> str:
    """A ratio such as ``1.23x``."""
    return f"{value:.2f}x" if math.isfinite(value) and value > 0 else "-"
