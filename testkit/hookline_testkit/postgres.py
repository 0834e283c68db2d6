"""A real PostgreSQL server for tests: Debian's `postgresql` binaries, a throwaway cluster.

`PostgresServer.start(folder)` runs `initdb` and `pg_ctl start` in `folder`, listening on
127.0.0.1 at a free port (and a Unix socket in the folder), with fsync off: tests want
speed, not durability across a power cut. PostgreSQL refuses to run as root, so when the
tests run as root the cluster belongs to an unprivileged user (`nobody` by default,
`HOOKLINE_TEST_PG_USER` to choose) and its commands run through `setpriv`.
`new_database()` creates an empty database and returns its URL; `stop()` stops the
server (`pg_ctl stop -m immediate`: the folder is thrown away anyway).

The binaries are found on PATH or in `/usr/lib/postgresql/<version>/bin`; without them
`start()` raises `PostgresMissing` saying what to install.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PostgresMissing", "PostgresServer", "find_pg_bin"]

SUPERUSER = "hookline"


class PostgresMissing(RuntimeError):
    pass


def find_pg_bin() -> Path:
    """The folder holding `initdb` and `pg_ctl`."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if versions:
        return Path(versions[0]).parent
    raise PostgresMissing(
        "PostgreSQL's server binaries (initdb, pg_ctl) were not found: "
        "install them (Debian: apt-get install postgresql)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    folder: Path
    port: int
    bin: Path
    user: pwd.struct_passwd | None  # the unprivileged owner when running as root
    _names: itertools.count = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def start(cls, folder: Path) -> PostgresServer:
        bin_dir = find_pg_bin()
        user = None
        if os.geteuid() == 0:
            user = pwd.getpwnam(os.environ.get("HOOKLINE_TEST_PG_USER", "nobody"))
        server = cls(folder=folder, port=_free_port(), bin=bin_dir, user=user)
        server._init_and_start()
        return server

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = [
                "setpriv",
                f"--reuid={self.user.pw_uid}",
                f"--regid={self.user.pw_gid}",
                "--clear-groups",
                *command,
            ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip()}")

    def _init_and_start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            # Its parents must let the owner in: use a folder made by `tempfile.mkdtemp()`
            # (under /tmp), not pytest's tmp_path (whose parents are 0700).
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w",
            "start",
        )  # fmt: skip

    def new_database(self) -> str:
        """A fresh empty database on this server; returns its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
