"""A throw-away PostgreSQL cluster for fault injection: initdb + pg_ctl on a free loopback port in a tmp dir.

Never the machine's own server (127.0.0.1:5432): this cluster has its own data directory, port and socket
directory, and is stopped and removed afterwards.  initdb refuses to run as root, so when the tests run as root
the cluster belongs to the ``postgres`` system user (the commands run with ``subprocess(user=...)``; the data
directory is chowned to it).  Faults: ``stop()`` (immediate shutdown, like a crash), ``start()``, ``freeze()``
(SIGSTOP to the postmaster and every backend: connections stay open, nothing answers), ``thaw()`` (SIGCONT).
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

BIN_CANDIDATES = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")


def _bin(name: str) -> str:
    for folder in BIN_CANDIDATES:
        path = Path(folder) / name
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found (PostgreSQL server binaries: initdb, pg_ctl)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self) -> None:
        self.port = free_port()
        if self.port == 5432:  # never the machine's own server
            self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="rxt-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run([_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                   "-E", "UTF8", "--locale", "C"], timeout=120)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run(cmd, user=self.user, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed ({done.returncode}): {done.stdout}{done.stderr}"
                               f"{self.log.read_text() if self.log.exists() else ''}")
        return done

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c fsync=off -c full_page_writes=off -c max_connections=60 -c shared_buffers=16MB")
        self._run([_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                   "start"], timeout=90)

    def stop(self, mode: str = "immediate") -> None:
        self.thaw()
        self._run([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"], timeout=90)

    def pids(self) -> list[int]:
        """The postmaster and all its children (backends, checkpointer, walwriter ...)."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return []
        postmaster = int(pid_file.read_text().splitlines()[0])
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == postmaster:
                    children.append(int(entry.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass

    def thaw(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL on port {self.port} did not come up")
