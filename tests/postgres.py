"""A private throwaway PostgreSQL cluster for the tests, run from Debian's postgresql package (version 15).

`PostgresCluster` runs initdb into a fresh temporary folder and starts its own postgres on a free loopback port,
with a superuser `vigil` that logs in by password (SCRAM) and a database `vigil`; the system's own cluster is never
used. It can be stopped and started again on the same data directory and port, so tests can take the database away
under load and bring it back. PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "vigil"
PASSWORD = "vigil-test-password"
# Durability is not wanted from a throwaway cluster; these make it fast.
FAST = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]


def available() -> bool:
    """Whether Debian's PostgreSQL 15 binaries are installed."""
    return all(os.access(BIN / name, os.X_OK) for name in ("initdb", "postgres"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """A cluster in its own temporary folder: `start()` it, `stop()` and `start()` it again, `close()` it."""

    def __init__(self, startup_timeout: float = 30.0, stop_timeout: float = 10.0) -> None:
        self.port = free_port()
        self.password = PASSWORD
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.root = Path(tempfile.mkdtemp(prefix="vigil-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgres.log"
        self.sockets.mkdir()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "vigil", password: bool = True) -> str:
        credentials = f"{USER}:{self.password}" if password else USER
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _command(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else list(args)

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        try:
            subprocess.run(self._command(str(BIN / "initdb"), "-D", str(self.data), "-U", USER,
                                         "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale"),
                           cwd=self.root, check=True, capture_output=True, timeout=120)
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"initdb failed:\n{error.stdout.decode()}{error.stderr.decode()}") from error
        finally:
            pwfile.unlink()

    def start(self) -> PostgresCluster:
        """Start the server (running initdb and creating the database `vigil` the first time); wait until ready."""
        if self.running:
            return self
        first = not self.data.exists()
        if first:
            self._initdb()
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self._process = process = subprocess.Popen(
                self._command(str(BIN / "postgres"), "-D", str(self.data), "-k", str(self.sockets),
                              "-h", "127.0.0.1", "-p", str(self.port), *FAST),
                cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2, autocommit=True) as conn:
                    if first:
                        conn.execute("CREATE DATABASE vigil")
                return self
            except psycopg.OperationalError as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    with self.log.open("rb") as log:
                        log.seek(offset)
                        output = log.read().decode(errors="replace")
                    raise RuntimeError(f"PostgreSQL on port {self.port} did not accept connections ({error}); "
                                       f"its log:\n{output}") from error
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        """A fresh empty database; returns its URL."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def _signal(self, process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
        if not self._as_postgres:
            process.send_signal(signum)
            return
        # As root the server is runuser's child: signal postgres itself (its pid heads postmaster.pid), since
        # runuser answers signals by sending SIGTERM (a "smart" shutdown that waits for every client).
        try:
            os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), signum)
        except (OSError, ValueError, IndexError):
            pass

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected); escalates to immediate (SIGQUIT), then SIGKILL.

        The data directory and port are kept, so `start()` brings the same cluster back."""
        process, self._process = self._process, None
        if process is None:
            return
        for signum in (signal.SIGINT, signal.SIGQUIT):
            if process.poll() is None:
                self._signal(process, signum)
            try:
                process.wait(self.stop_timeout)
                return
            except subprocess.TimeoutExpired:
                pass
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def close(self) -> None:
        """Stop the server and remove its temporary folder."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
