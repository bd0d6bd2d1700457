"""A throwaway PostgreSQL server for the shared-study tests: started in a temporary folder, stopped after them.

``.ci/run`` installs Debian's ``postgresql`` package when ``initdb`` is missing; the server runs from its binaries
(``initdb`` on PATH, else the newest ``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root, so
as root it runs as the ``postgres`` system user (``setpriv``), in a folder that user owns. It listens on a unix
socket only (no TCP port to collide on), in a short folder under ``/tmp`` so that the socket's path stays under the
107-byte limit whatever TMPDIR is. Authentication is ``trust``: nothing but this machine can reach the socket.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable"]

TIMEOUT = 120  # seconds for initdb and for the server to come up, on a loaded machine


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be started here; the message says why (a test skips with it)."""


def _bin_dir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if versions:
        return Path(versions[-1]).parent
    raise PostgresUnavailable("PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql)")


class PostgresServer:
    """One server: :meth:`start` it, ask :meth:`new_database` for a URL, :meth:`stop` it (its folder goes too)."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.prefix: list[str] = []
        self.uid = self.gid = -1
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root, and no 'postgres' user to run the server as") from None
            if not shutil.which("setpriv"):
                raise PostgresUnavailable("running as root and setpriv is missing: cannot run the server as postgres")
            self.uid, self.gid = user.pw_uid, user.pw_gid
            self.prefix = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]
        base = "/tmp" if os.access("/tmp", os.W_OK) else None
        self.root = Path(tempfile.mkdtemp(prefix="attnsearch-pg-", dir=base))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.running = False
        self.databases = 0

    def _as_server_user(self, *command: str, timeout: float = TIMEOUT) -> None:
        done = subprocess.run([*self.prefix, *command], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            text = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
            log = self.log.read_text(errors="replace").strip().splitlines() if self.log.exists() else []
            raise PostgresUnavailable(f"{Path(command[0]).name} failed: {(log or text)[-1][:300]}")

    def start(self) -> PostgresServer:
        if self.uid >= 0:
            os.chown(self.root, self.uid, self.gid)
        self.root.chmod(0o700)
        initdb = str(self.bin / "initdb")
        self._as_server_user(initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                             "--locale=C", "--no-sync")  # fmt: skip
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            # a throwaway server: unix socket only, no durability, small
            conf.write(
                f"\nlisten_addresses = ''\nunix_socket_directories = '{self.root}'\nfsync = off\n"
                "synchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\nmax_connections = 40\n"
            )
        self._as_server_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t",
                             str(TIMEOUT), "start")  # fmt: skip
        self.running = True
        return self

    def new_database(self) -> str:
        """A new empty database; its SQLAlchemy URL (psycopg2 over the unix socket)."""
        import psycopg2

        self.databases += 1
        name = f"study{self.databases}"
        connection = psycopg2.connect(host=str(self.root), user="postgres", dbname="postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            connection.close()
        return f"postgresql+psycopg2://postgres@/{name}?host={self.root}"

    def stop(self) -> None:
        try:
            if self.running:
                self._as_server_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                                     "stop")  # fmt: skip
                self.running = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
