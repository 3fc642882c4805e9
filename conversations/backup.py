"""Backup and restore of one installation: the database and the adapter and classifier stores, in one archive.

The archive holds a manifest with a SHA-256 per file, signed with the installation's secret key (HMAC-SHA256);
restore checks the signature and every checksum before it replaces anything, and the archive is private (0600).
"""

import hashlib
import hmac
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import URL, make_url

from conversations.db import current_revision, make_engine
from core.settings import Settings

logger = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
# HMAC-SHA256 of the manifest's bytes with SUPPORTBOT_SECRET_KEY: an archive altered together with its
# checksums, or made by another installation, is refused.
SIGNATURE = "manifest.hmac"
ROOT = "supportbot-backup"
# Folders of the data dir that hold what cannot be rebuilt: every adapter and classifier version and their
# pointers. Datasets, checkpoints and logs are left out; the base model comes from its own source.
STORES = ("adapters", "classifiers")
# Half-written files of the stores' write-then-rename steps.
_STAGING_SUFFIXES = (".partial", ".tmp")


# An archive's name, written and read with the same format: its UTC time to the microsecond.
ARCHIVE_NAME = "supportbot-backup-%Y%m%dT%H%M%S%fZ.tar.gz"


class BackupError(Exception):
    """A backup could not be made, or an archive is damaged or does not fit; nothing was replaced."""


@dataclass(frozen=True)
class PgTools:
    """Where pg_dump, pg_restore and psql are; they must be at least the server's major version."""

    bin_dir: Path | None = None

    def path(self, program: str) -> str:
        if self.bin_dir is not None:
            return str(self.bin_dir / program)
        found = shutil.which(program)
        if found is None:
            raise BackupError(f"{program} is not installed (Debian: postgresql-client)")
        return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pg_command(url: URL) -> tuple[list[str], dict[str, str]]:
    """Connection arguments for the PostgreSQL tools; the password goes in the environment, not argv."""
    args = ["--host", url.host or "localhost", "--port", str(url.port or 5432)]
    if url.username:
        args += ["--username", url.username]
    env = {**os.environ}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    if "sslmode" in url.query:
        env["PGSSLMODE"] = str(url.query["sslmode"])
    return args, env


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{Path(command[0]).name} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


def _dump_database(database_url: str, folder: Path, tools: PgTools) -> dict:
    url = make_url(database_url)
    engine = make_engine(database_url)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    if url.get_backend_name() == "sqlite":
        target = folder / "database.sqlite"
        # SQLite's online backup: a consistent copy even while the app writes.
        with closing(sqlite3.connect(url.database or "")) as source, closing(sqlite3.connect(target)) as copy:
            source.backup(copy)
        return {"dialect": "sqlite", "file": target.name, "revision": revision}
    if url.get_backend_name() == "postgresql":
        target = folder / "database.dump"
        args, env = _pg_command(url)
        # Custom format: compressed, and restorable object by object; owners and grants are the target's.
        _run([tools.path("pg_dump"), *args, "--format=custom", "--no-owner", "--no-privileges",
              f"--file={target}", url.database or ""], env)  # fmt: skip
        return {"dialect": "postgresql", "file": target.name, "revision": revision}
    raise BackupError(f"cannot back up a {url.get_backend_name()} database")


def _copy_store(source: Path, target: Path) -> None:
    def ignore(_folder: str, names: list[str]) -> set[str]:
        return {name for name in names if name.endswith(_STAGING_SUFFIXES) or name.startswith(".restore-old")}

    shutil.copytree(source, target, ignore=ignore)


def create_backup(settings: Settings, destination: Path, tools: PgTools | None = None) -> Path:
    """Write `supportbot-backup-<UTC time>.tar.gz` into the folder `destination`; returns its path."""
    destination.mkdir(parents=True, exist_ok=True)
    archive = destination / f"{datetime.now(UTC):{ARCHIVE_NAME}}"
    with tempfile.TemporaryDirectory(dir=destination, prefix=".backup-") as scratch:
        root = Path(scratch) / ROOT
        root.mkdir()
        database = _dump_database(settings.resolved_database_url, root, tools or PgTools())
        stores = []
        for store in STORES:
            source = settings.data_dir / store
            if source.is_dir():
                _copy_store(source, root / "stores" / store)
                stores.append(store)
        files = {
            str(path.relative_to(root)): {"sha256": sha256(path), "bytes": path.stat().st_size}
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "database": database,
            "stores": stores,
            "files": files,
        }
        manifest_bytes = json.dumps(manifest, indent=2).encode()
        (root / MANIFEST).write_bytes(manifest_bytes)
        (root / SIGNATURE).write_text(sign(manifest_bytes, settings.secret_key))
        partial = archive.with_name(archive.name + ".partial")
        # Private from the first byte: the archive holds every conversation and the staff's password hashes.
        partial.touch(mode=0o600)
        os.chmod(partial, 0o600)
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(root, arcname=ROOT)
        os.replace(partial, archive)
    logger.info("backup written to %s (%d files)", archive, len(files))
    pruned = prune_backups(destination, keep_days=settings.backup_days)
    if pruned:
        logger.info("deleted %d backup archive(s) older than %d days from %s", len(pruned), settings.backup_days,
                    destination)  # fmt: skip
    return archive


def prune_backups(folder: Path, *, keep_days: int, now: datetime | None = None) -> list[Path]:
    """Delete the archives `create_backup` wrote into `folder` more than `keep_days` days before `now` (their time
    is read from their name, which copying does not change); any other file is left alone."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    pruned = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            written = datetime.strptime(path.name, ARCHIVE_NAME).replace(tzinfo=UTC)
        except ValueError:
            continue  # not one of ours
        if path.is_file() and written < cutoff:
            path.unlink()
            pruned.append(path)
    return pruned


def sign(manifest: bytes, secret_key: str) -> str:
    return hmac.new(secret_key.encode(), manifest, hashlib.sha256).hexdigest()


def verify_archive(archive: Path, into: Path, secret_key: str) -> tuple[Path, dict]:
    """Unpack `archive` into the folder `into`, check the manifest's signature with `secret_key` and every
    file against the manifest; returns the root and manifest."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BackupError(f"{archive} is not a readable backup archive: {error}") from error
    root = into / ROOT
    try:
        manifest_bytes = (root / MANIFEST).read_bytes()
        signature = (root / SIGNATURE).read_text().strip() if (root / SIGNATURE).is_file() else ""
        manifest = json.loads(manifest_bytes)
    except (OSError, ValueError) as error:
        raise BackupError(f"{archive} has no readable manifest: {error}") from error
    if not hmac.compare_digest(signature.encode(), sign(manifest_bytes, secret_key).encode()):
        raise BackupError(
            f"{archive} is not signed with this installation's SUPPORTBOT_SECRET_KEY (made elsewhere, "
            "made before backups were signed, or altered); nothing was restored"
        )
    if manifest.get("format") != FORMAT:
        raise BackupError(f"unknown backup format {manifest.get('format')!r}")
    listed = manifest["files"]
    present = {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()} - {MANIFEST, SIGNATURE}
    problems = [f"missing: {name}" for name in sorted(set(listed) - present)]
    problems += [f"not in the manifest: {name}" for name in sorted(present - set(listed))]
    for name in sorted(set(listed) & present):
        path = root / name
        if path.stat().st_size != listed[name]["bytes"] or sha256(path) != listed[name]["sha256"]:
            problems.append(f"checksum mismatch: {name}")
    if problems:
        raise BackupError("backup does not match its manifest; nothing was restored:\n  " + "\n  ".join(problems))
    return root, manifest


def _restore_database(database_url: str, root: Path, database: dict, tools: PgTools) -> None:
    url = make_url(database_url)
    dialect = url.get_backend_name()
    if dialect != database["dialect"]:
        raise BackupError(f"the backup holds a {database['dialect']} database; the target is {dialect}")
    source = root / database["file"]
    if dialect == "sqlite":
        target = Path(url.database or "")
        target.parent.mkdir(parents=True, exist_ok=True)
        # The backup API overwrites every page of the target in one step: readers see old or new, never a mix.
        with closing(sqlite3.connect(source)) as backup, closing(sqlite3.connect(target)) as live:
            backup.backup(live)
        return
    # PostgreSQL: drop what the store holds now and load the dump, all in one transaction, so a failure
    # leaves the database as it was. The database is supportbot's alone (see deploy/README.md).
    engine = make_engine(database_url)
    try:
        inspector = inspect(engine)
        tables = inspector.get_table_names()
        enums = [enum["name"] for enum in inspector.get_enums()]  # type: ignore[attr-defined]
    finally:
        engine.dispose()
    prelude = root.parent / "prelude.sql"
    prelude.write_text(
        "".join(f'DROP TABLE IF EXISTS "{table}" CASCADE;\n' for table in tables)
        + "".join(f'DROP TYPE IF EXISTS "{enum}" CASCADE;\n' for enum in enums)
    )
    script = root.parent / "restore.sql"
    _run([tools.path("pg_restore"), "--no-owner", "--no-privileges", f"--file={script}", str(source)])
    args, env = _pg_command(url)
    _run([tools.path("psql"), *args, "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1",
          f"--file={prelude}", f"--file={script}", f"--dbname={url.database}"], env)  # fmt: skip


def _replace_store(staged: Path | None, target: Path) -> None:
    """Make `target`'s contents those of `staged` (empty when None); the folder itself may be a mount point."""
    target.mkdir(parents=True, exist_ok=True)
    aside = target / f".restore-old-{os.getpid()}"
    aside.mkdir()
    moved = []
    for entry in list(target.iterdir()):
        if entry != aside:
            entry.rename(aside / entry.name)
            moved.append(entry.name)
    try:
        for entry in sorted(staged.iterdir()) if staged is not None else []:
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, target / entry.name)
    except OSError:
        for entry in list(target.iterdir()):
            if entry != aside:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        for name in moved:
            (aside / name).rename(target / name)
        aside.rmdir()
        raise
    shutil.rmtree(aside)


def restore_backup(settings: Settings, archive: Path, tools: PgTools | None = None) -> dict:
    """Check `archive` completely, then replace the database and the stores with its contents; returns its manifest.

    Stop the app and the training worker first: the store is replaced underneath them.
    """
    scratch_parent = settings.data_dir if settings.data_dir.is_dir() else None
    with tempfile.TemporaryDirectory(dir=scratch_parent, prefix=".restore-") as scratch:
        root, manifest = verify_archive(archive, Path(scratch), settings.secret_key)
        _restore_database(settings.resolved_database_url, root, manifest["database"], tools or PgTools())
        for store in STORES:
            staged = root / "stores" / store
            _replace_store(staged if store in manifest["stores"] else None, settings.data_dir / store)
    logger.info(
        "restored %s (made %s, migration %s)", archive, manifest["created_at"], manifest["database"]["revision"]
    )
    return manifest
