"""Backup and restore on SQLite and on a real PostgreSQL: a populated store is backed up, wiped (or changed),
restored, and found exactly as it was; a damaged archive is refused before anything is touched.
"""

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select
from sqlmodel import Session

from conversations import crud
from conversations.backup import BackupError, PgTools, create_backup, restore_backup
from conversations.db import make_engine, upgrade_db
from core.settings import Settings
from runtime.registry import ADAPTER_META, AdapterRegistry, classifier_registry
from tests.utils.postgres import PostgresServer, find_bin_dir
from tests.utils.store import bot, customer, make_conversation

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    return Settings(data_dir=tmp_path / "data", database_url=url)


def tools() -> PgTools:
    # The test server's own programs, so client and server versions match.
    return PgTools(find_bin_dir())


def add_version(root: Path, name: str, marker: str, payload: bytes) -> None:
    (root / name).mkdir(parents=True)
    (root / name / marker).write_text(json.dumps({"name": name}))
    (root / name / "weights.safetensors").write_bytes(payload)


def populate(settings: Settings, conversations: int = 3) -> None:
    engine = make_engine(settings.resolved_database_url)
    upgrade_db(engine)
    with Session(engine) as session:
        for index in range(conversations):
            make_conversation(session, customer(f"Where is order {index}?", "order_status", 0.9), bot("On its way."))
        crud.create_training_run(session=session, trigger="manual")
    engine.dispose()
    adapters = AdapterRegistry(settings.adapters_dir)
    for version in ("domain-v1", "domain-v2"):
        add_version(settings.adapters_dir, version, ADAPTER_META, os.urandom(4096))
        adapters.promote(version)
    add_version(settings.classifiers_dir, "intent-v1", "classifier.json", os.urandom(1024))
    classifier_registry(settings.classifiers_dir).promote("intent-v1")


def snapshot(settings: Settings) -> dict:
    """Every row of every table, and every file of the stores with its hash."""
    engine = make_engine(settings.resolved_database_url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as connection:
            tables = {
                name: sorted(tuple(str(value) for value in row) for row in connection.execute(select(table)))
                for name, table in metadata.tables.items()
            }
    finally:
        engine.dispose()
    files = {
        str(path.relative_to(settings.data_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for store in ("adapters", "classifiers")
        for path in sorted((settings.data_dir / store).rglob("*"))
        if path.is_file()
    }
    return {"tables": tables, "files": files}


def wipe(settings: Settings, request: pytest.FixtureRequest) -> None:
    """Lose everything: the database and both stores."""
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).unlink()
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name = url.rsplit("/", 1)[1]
        server.drop_database(name)
        with server._admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    for store in ("adapters", "classifiers"):
        for path in sorted((settings.data_dir / store).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()


def test_backup_wipe_restore_gives_back_the_same_store(
    settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    populate(settings)
    before = snapshot(settings)
    assert len(before["tables"]["conversation"]) == 3 and len(before["files"]) == 8

    archive = create_backup(settings, tmp_path / "backups", tools())
    wipe(settings, request)
    assert snapshot(settings)["files"] == {}
    restore_backup(settings, archive, tools())
    assert snapshot(settings) == before
    assert AdapterRegistry(settings.adapters_dir).active() == "domain-v2"

    # Restoring over a store that moved on puts it back exactly: newer rows and versions are gone.
    populate_more(settings)
    assert snapshot(settings) != before
    restore_backup(settings, archive, tools())
    assert snapshot(settings) == before


def populate_more(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        make_conversation(session, customer("A newer question"), bot("A newer answer"))
    engine.dispose()
    add_version(settings.adapters_dir, "domain-v3", ADAPTER_META, b"newer")
    AdapterRegistry(settings.adapters_dir).promote("domain-v3")


def test_a_damaged_archive_is_refused_and_nothing_is_replaced(settings: Settings, tmp_path: Path) -> None:
    populate(settings)
    archive = create_backup(settings, tmp_path / "backups", tools())
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(archive, "r:gz") as source, tarfile.open(damaged, "w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("domain-v1/weights.safetensors"):
                data = bytes([data[0] ^ 0xFF]) + data[1:]  # one flipped byte
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    populate_more(settings)
    current = snapshot(settings)
    with pytest.raises(BackupError, match="checksum mismatch: stores/adapters/domain-v1/weights.safetensors"):
        restore_backup(settings, damaged, tools())
    assert snapshot(settings) == current


def test_the_cli_backs_up_and_restores(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'cli.db'}")
    populate(settings)
    before = snapshot(settings)
    env = {
        **os.environ,
        "SUPPORTBOT_DATA_DIR": str(settings.data_dir),
        "SUPPORTBOT_DATABASE_URL": settings.database_url,
    }

    def supportbot(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    made = supportbot("backup", str(tmp_path / "backups"))
    assert made.returncode == 0, made.stderr
    archive = Path(made.stdout.strip())
    assert archive.is_file() and archive.parent == tmp_path / "backups"
    checked = supportbot("restore", str(archive), "--check")
    assert checked.returncode == 0 and "Archive verified" in checked.stderr, checked.stderr
    populate_more(settings)
    restored = supportbot("restore", str(archive), "--yes")
    assert restored.returncode == 0, restored.stderr
    assert snapshot(settings) == before


def test_archives_are_private_and_signed_with_the_secret_key(settings: Settings, tmp_path: Path) -> None:
    populate(settings)
    archive = create_backup(settings, tmp_path / "backups", tools())
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    # An attacker who alters a file and fixes its checksum in the manifest still lacks the key.
    forged = tmp_path / "forged.tar.gz"
    with tarfile.open(archive, "r:gz") as source, tarfile.open(forged, "w:gz") as target:
        members = {member.name: member for member in source.getmembers()}
        contents = {name: source.extractfile(m).read() for name, m in members.items() if m.isfile()}
        weights = next(name for name in contents if name.endswith("domain-v1/weights.safetensors"))
        contents[weights] = b"evil" + contents[weights][4:]
        manifest_name = next(name for name in contents if name.endswith("/manifest.json"))
        manifest = json.loads(contents[manifest_name])
        entry = manifest["files"][weights.split("/", 1)[1]]
        entry["sha256"] = hashlib.sha256(contents[weights]).hexdigest()
        contents[manifest_name] = json.dumps(manifest, indent=2).encode()
        for name, member in members.items():
            data = contents.get(name)
            if data is not None:
                member.size = len(data)
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    current = snapshot(settings)
    with pytest.raises(BackupError, match="not signed with this installation's SUPPORTBOT_SECRET_KEY"):
        restore_backup(settings, forged, tools())
    other_installation = settings.model_copy(update={"secret_key": "another installation's key"})
    with pytest.raises(BackupError, match="not signed"):
        restore_backup(other_installation, archive, tools())
    assert snapshot(settings) == current
    restore_backup(settings, archive, tools())


def test_archives_older_than_the_backup_period_are_deleted_and_nothing_else(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    now = datetime.now(UTC)
    old = folder / f"supportbot-backup-{now - timedelta(days=31):%Y%m%dT%H%M%S%fZ}.tar.gz"
    recent = folder / f"supportbot-backup-{now - timedelta(days=29):%Y%m%dT%H%M%S%fZ}.tar.gz"
    unrelated = folder / "supportbot-backup-notes.txt"
    for path in (old, recent, unrelated):
        path.write_bytes(b"x")
    archive = create_backup(settings.model_copy(update={"backup_keep_days": 30}), folder, tools())
    assert sorted(folder.iterdir()) == sorted([archive, recent, unrelated])


def test_a_backup_period_as_long_as_the_retention_period_is_refused() -> None:
    with pytest.raises(ValueError, match="BACKUP_KEEP_DAYS .* must be shorter than SUPPORTBOT_RETENTION_DAYS"):
        Settings(retention_days=30, backup_keep_days=30)
