"""A private PostgreSQL server for the store tests: a fresh cluster in a temporary folder on a free port.

`make postgres` installs Debian's `postgresql` package. PostgreSQL refuses to run as root, so under
root the cluster belongs to the `postgres` system user and its commands run through `runuser`.
"""

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from tests.utils.ports import free_port


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server programs are not installed, or the server did not start."""


def find_bin_dir() -> Path:
    """The folder with initdb and pg_ctl: Debian's newest /usr/lib/postgresql/<version>/bin, else the PATH."""

    def version(pg_ctl: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", pg_ctl.parent.parent.name))

    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=version)
    if installed:
        return installed[-1].parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresUnavailable("PostgreSQL is not installed; run `make postgres` (Debian's postgresql package)")


class PostgresServer:
    """One running cluster; `create_database` hands each test its own empty database."""

    user = "postgres"

    def __init__(self, bin_dir: Path, root: Path, run_as: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "server.log"
        self.run_as = run_as
        self.port = free_port()

    @classmethod
    def start(cls) -> "PostgresServer":
        bin_dir = find_bin_dir()
        run_as = "postgres" if os.geteuid() == 0 else None
        # Not pytest's tmp_path: under root that folder is closed to the postgres user.
        root = Path(tempfile.mkdtemp(prefix="supportbot-pg-"))
        if run_as is not None:
            try:
                account = pwd.getpwnam(run_as)
            except KeyError:
                shutil.rmtree(root)
                raise PostgresUnavailable("running as root needs the 'postgres' user; run `make postgres`") from None
            os.chown(root, account.pw_uid, account.pw_gid)
        server = cls(bin_dir, root, run_as)
        try:
            server._run("initdb", "-D", str(server.data_dir), "-U", cls.user, "-A", "trust", "-E", "UTF8", "--no-sync")
            options = (
                f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 "
                # A throwaway cluster: durability only slows the tests down.
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            server._run("pg_ctl", "-D", str(server.data_dir), "-l", str(server.log_path), "-o", options, "-w", "start")
        except subprocess.CalledProcessError as error:
            log = server.log_path.read_text(errors="replace")[-2000:] if server.log_path.exists() else ""
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailable(f"PostgreSQL did not start: {error.stderr or error}\n{log}") from error
        return server

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, cwd=self.root, timeout=120)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True)

    def create_database(self) -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        with self._admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
