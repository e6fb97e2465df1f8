"""A throwaway PostgreSQL server on loopback, for the tests and the benchmarks.

It uses the server programs of Debian's `postgresql` package (`initdb`, `pg_ctl` from
/usr/lib/postgresql/<version>/bin, or found on PATH, or in $WRAPUP_PG_BINDIR): a new cluster
in a temporary folder, on a free loopback port, trust authentication for the `postgres` user
(nothing else can reach it: loopback only, no Unix socket), thrown away at the end. PostgreSQL
refuses to run as root: as root, the programs run as the `postgres` user (which the package
creates) through `runuser`.

`start()` gives a running `PostgresServer`, or raises `PostgresUnavailable` saying why not.
`PostgresServer.create_database()` gives the SQLAlchemy URL of a new, empty database.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: What the skip (or, under CI, the failure) of a PostgreSQL test starts with.
UNAVAILABLE = "PostgreSQL tests not run"
#: The user the server runs as when the tests run as root.
SERVER_USER = "postgres"

_FAST = {
    # A throwaway server: durability is not wanted, speed is (tests only).
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


class PostgresUnavailable(Exception):
    """No server can be started here; the message says why, for a person."""


def find_bindir() -> Path | None:
    """The folder holding `initdb` and `pg_ctl` ($WRAPUP_PG_BINDIR alone when set; else the
    newest Debian version, else PATH); None when there is none."""
    given = os.environ.get("WRAPUP_PG_BINDIR")
    if given:
        folder = Path(given)
        return folder if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file() else None
    candidates: list[Path] = []
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self, bindir: Path, root: Path, port: int, as_user: str | None) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = port
        self.as_user = as_user
        self._names = itertools.count(1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_user is not None:
            command = ["runuser", "-u", self.as_user, "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=120, cwd=self.root
        )

    def _admin(self, statement: str) -> None:
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(statement.encode())

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        name = f"ledger_{os.getpid()}_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole server so far: the postmaster, its live processes,
        and (through the postmaster's children's times) every backend that has exited."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            pid, ppid = int(stat.parent.name), int(fields[1])
            if pid == postmaster:
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            elif ppid == postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / ticks

    def stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def start(*, durable: bool = False, settings: dict[str, str] | None = None) -> PostgresServer:
    """A new server, running. `durable=False` (the tests) turns fsync off."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise PostgresUnavailable(
            "psycopg is not installed; pip install -e '.[dev]' (or the `postgres` extra)"
        ) from None
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "no PostgreSQL server programs (initdb, pg_ctl) found; install Debian's "
            "`postgresql` package (apt-get install -y postgresql) or set WRAPUP_PG_BINDIR"
        )
    as_user: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root and there is no `{SERVER_USER}` user to run the server as "
                "(PostgreSQL refuses root); install Debian's `postgresql` package"
            ) from None
        if shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root and `runuser` is missing")
        as_user = SERVER_USER
    root = Path(tempfile.mkdtemp(prefix="wrapup-pg-"))
    if as_user is not None:
        entry = pwd.getpwnam(as_user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    last_failure = ""
    for _attempt in range(3):  # a free port can be taken between finding it and listening
        server = PostgresServer(bindir, root, _free_port(), as_user)
        if not server.data.exists():
            init = server._run(
                "initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--no-locale", "--no-sync",
            )  # fmt: skip
            if init.returncode != 0:
                shutil.rmtree(root, ignore_errors=True)
                raise PostgresUnavailable(f"initdb failed: {_last_line(init)}")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(server.port),
            "unix_socket_directories": "''",
            "max_connections": "200",
            **({} if durable else _FAST),
            **(settings or {}),
        }
        _write_conf(server, conf)
        started = server._run(
            "pg_ctl", "-D", str(server.data), "-l", str(root / "server.log"), "-w", "-t", "60",
            "start",
        )  # fmt: skip
        if started.returncode == 0:
            return server
        last_failure = _last_line(started) + " " + _log_tail(root)
    shutil.rmtree(root, ignore_errors=True)
    raise PostgresUnavailable(f"the server did not start: {last_failure.strip()}")


def _write_conf(server: PostgresServer, conf: dict[str, str]) -> None:
    """The settings, in a file the server's own configuration includes (the last word)."""
    extra = server.data / "wrapup.conf"
    extra.write_text("".join(f"{k} = {v}\n" for k, v in conf.items()), encoding="utf-8")
    main = server.data / "postgresql.conf"
    text = main.read_text(encoding="utf-8")
    if "include = 'wrapup.conf'" not in text:
        main.write_text(text + "\ninclude = 'wrapup.conf'\n", encoding="utf-8")
    if server.as_user is not None:
        entry = pwd.getpwnam(server.as_user)
        os.chown(extra, entry.pw_uid, entry.pw_gid)


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"


def _log_tail(root: Path) -> str:
    try:
        lines = (root / "server.log").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


@contextlib.contextmanager
def running(*, durable: bool = False) -> Iterator[PostgresServer]:
    server = start(durable=durable)
    try:
        yield server
    finally:
        server.stop()
