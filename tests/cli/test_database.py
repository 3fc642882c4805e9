"""The commands find the app's database from any folder, and never make a new, empty one by mistake: the default
data directory is the checkout's var/ wherever a command runs, and a command other than `supportbot start` that
finds no SQLite database stops and says where it looked, creating nothing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import Session

from conversations import knowledge as kb
from conversations.db import make_engine, upgrade_db
from core.settings import Settings
from tests.conftest import ROOT

RETURNS = "# Returns\n\nYou can return most items within 60 days of delivery.\n"


def test_the_default_data_dir_is_the_checkouts_wherever_a_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPPORTBOT_DATA_DIR", raising=False)
    monkeypatch.delenv("SUPPORTBOT_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.data_dir == ROOT / "var"
    assert settings.resolved_database_url == f"sqlite:///{ROOT / 'var' / 'supportbot.db'}"


def supportbot(*args: str, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    """The command as an administrator runs it from `cwd`, with the app's data directory set as the app has it."""
    env = {key: value for key, value in os.environ.items() if key != "SUPPORTBOT_DATABASE_URL"}
    env |= {"SUPPORTBOT_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A folder the administrator happens to be in, holding the article to import."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "returns.md").write_text(RETURNS)
    return folder


def test_a_command_finds_no_database_and_creates_none(elsewhere: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for args in (["kb", "import", "returns.md"], ["staff", "list"], ["runs"], ["backup", str(tmp_path / "backups")]):
        result = supportbot(*args, cwd=elsewhere, data_dir=data)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert f"No supportbot database at {data / 'supportbot.db'}" in " ".join(result.stderr.split()), args
    assert list(data.iterdir()) == [] and sorted(path.name for path in elsewhere.iterdir()) == ["returns.md"]


def test_a_command_from_another_folder_writes_into_the_apps_database(elsewhere: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = make_engine(f"sqlite:///{data / 'supportbot.db'}")
    upgrade_db(engine)  # as `supportbot start` left it
    result = supportbot("kb", "import", "returns.md", cwd=elsewhere, data_dir=data)
    assert result.returncode == 0, result.stderr
    with Session(engine) as session:
        returns = kb.get_article(session=session, slug="returns")
    engine.dispose()
    assert "60 days" in returns.text
    assert sorted(path.name for path in elsewhere.iterdir()) == ["returns.md"]
