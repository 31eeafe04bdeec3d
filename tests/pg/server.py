"""Real PostgreSQL 15 instances for the tests and the benchmark (Debian's packages).

The server refuses to run as root, so ``initdb`` and ``postgres`` run as the ``postgres``
user (``runuser``) when this process is root; the data directory, the log and the Unix
socket live in one temporary directory owned by that user.  Every instance listens on
127.0.0.1 on a free port of its own, with ``wal_level = logical``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.netutil import free_port

BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
SERVER_USER = "postgres"


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", SERVER_USER, "--", *argv]


class PgInstance:
    """One initdb'd cluster.  ``dsn(db)`` connects as the superuser ``postgres``."""

    def __init__(self, *, wal_level: str = "logical", fsync: bool = False, extra: dict[str, str] | None = None,
                 wal_segsize_mb: int | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="worm-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.wal_level = wal_level
        self.fsync = fsync
        self.extra = dict(extra or {})
        self.wal_segsize_mb = wal_segsize_mb  # initdb --wal-segsize (default 16): small, to outrun retention
        if os.geteuid() == 0:
            pw = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o755)

    # -- lifecycle ------------------------------------------------------------------------

    def init(self) -> PgInstance:
        subprocess.run(_as_server_user([str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                                        "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
                                        *([f"--wal-segsize={self.wal_segsize_mb}"] if self.wal_segsize_mb else [])]),
                       check=True, capture_output=True)
        self.configure()
        return self

    def configure(self, **overrides: str) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "wal_level": self.wal_level,
            "max_replication_slots": "32",
            "max_wal_senders": "32",
            "max_logical_replication_workers": "16",
            "max_worker_processes": "32",
            "fsync": "on" if self.fsync else "off",
            "synchronous_commit": "on",  # with fsync off still cheap; commits are decodable at once
            "full_page_writes": "on" if self.fsync else "off",
            "shared_buffers": "64MB",
            "max_connections": "100",
            "wal_sender_timeout": "10s",
            "wal_retrieve_retry_interval": "500ms",
            "timezone": "'UTC'",
            "log_min_messages": "warning",
        }
        settings.update(self.extra)
        settings.update(overrides)
        conf = self.data / "postgresql.auto.conf"
        conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))

    def start(self) -> PgInstance:
        subprocess.run(_as_server_user([str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                                        "-t", "60", "start"]), check=True, capture_output=True)
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                                            "-t", "60", "stop"]), capture_output=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ----------------------------------------------------------------------

    def dsn(self, db: str = "postgres", user: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={db} user={user} connect_timeout=10"

    def connect(self, db: str = "postgres", user: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn(db, user), autocommit=True)

    def create_database(self, name: str | None = None) -> str:
        name = name or "t_" + uuid.uuid4().hex[:12]
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            # the database's slots first: a logical slot pins its database
            for (slot,) in conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s",
                                        (name,)).fetchall():
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            with contextlib.suppress(psycopg.Error):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running(**kwargs: object) -> Iterator[PgInstance]:
    inst = PgInstance(**kwargs)  # type: ignore[arg-type]
    try:
        inst.init().start()
        yield inst
    finally:
        inst.destroy()


def wait_for(predicate: object, timeout: float = 30.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False
