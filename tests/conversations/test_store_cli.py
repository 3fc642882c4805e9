"""`supportbot store export / import / retention` as an administrator runs them."""

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from cli.main import app
from conversations import crud
from conversations.filters import ConversationFilter
from core.settings import Settings, get_settings
from serving.app import retention_loop
from tests.utils.store import bot, customer, make_conversation


@pytest.fixture
def configured(engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The CLI pointed at the test database through its environment variable, as an admin would."""
    monkeypatch.setenv("SUPPORTBOT_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield engine
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["store", *args])
    return result.exit_code, result.stdout, result.stderr


def test_export_masks_unless_told_and_import_brings_it_back(configured: Engine, tmp_path: Path) -> None:
    with Session(configured) as session:
        make_conversation(session, customer("mail me: jane@example.com", "contact", 0.3), bot("Will do."))
        make_conversation(session, customer("just browsing", "smalltalk", 0.9), bot("Enjoy!"))

    code, out, err = run("export", "--low-confidence", "0.5")
    assert code == 0, err
    [record] = [json.loads(line) for line in out.splitlines()]
    assert record["messages"][0]["content"] == "mail me: [email]"
    assert "Exported 1 conversations (personal data masked)" in err

    target = tmp_path / "out" / "all.jsonl"
    code, _, err = run("export", "--no-mask", "--output", str(target))
    assert code == 0, err
    lines = target.read_text().splitlines()
    assert len(lines) == 2 and "jane@example.com" in lines[0]
    assert [p.name for p in target.parent.iterdir()] == ["all.jsonl"]  # no scratch file left behind

    code, _, err = run("import", str(target))
    assert code == 0, err
    assert "Imported 2 conversations (4 messages)" in err
    code, out, _ = run("export", "--channel", "import", "--format", "csv", "--no-mask")
    assert code == 0 and out.count("jane@example.com") == 1 and out.splitlines()[0].startswith("conversation_id,")


def test_clear_errors_and_no_partial_file(configured: Engine, tmp_path: Path) -> None:
    with Session(configured) as session:
        make_conversation(session, customer("a"), bot("b"))
        make_conversation(session, customer("c"), bot("d"))
    target = tmp_path / "export.jsonl"

    code, _, err = run("export", "--created-from", "2025-02-30", "--output", str(target))
    assert code == 2 and "created_from" in err and not target.exists()
    code, _, err = run("export", "--status", "lost")
    assert code == 2 and "status" in err
    code, _, err = run("export", "--max-rows", "1", "--output", str(target))
    assert code == 1 and "more than the export limit of 1" in err and not target.exists()

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": [{"role": "user", "content": "fine"}]}\n{"messages": "nope"}\n')
    code, _, err = run("import", str(broken))
    assert code == 1 and "line 2: messages" in err and "nothing was stored" in err
    with Session(configured) as session:
        assert crud.count_conversations(session=session, filters=ConversationFilter(limit=None)) == 2


def test_retention_applies_the_settings_now(configured: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    with Session(configured) as session:
        old, _ = make_conversation(
            session, customer("call +44 20 7946 0958"), updated_at=datetime.now(UTC) - timedelta(days=40)
        )
        make_conversation(session, customer("call +44 20 7946 0958"))
        old_id = old.id
    monkeypatch.setenv("SUPPORTBOT_RETENTION_DAYS", "30")
    get_settings.cache_clear()
    code, _, err = run("retention")
    assert code == 0, err
    assert "1 anonymised, 1 messages had personal data masked" in err
    with Session(configured) as session:
        assert crud.list_messages(session=session, conversation_id=old_id)[0].text == "call [phone]"

    code, _, err = run("retention", "--mode", "delete", "--keep-days", "30")
    assert code == 0 and "1 deleted, 1 messages deleted" in err


def test_the_app_applies_retention_on_its_own_schedule(engine: Engine) -> None:
    with Session(engine) as session:
        old, _ = make_conversation(
            session, customer("mail me at jo@example.com"), updated_at=datetime.now(UTC) - timedelta(days=40)
        )
        recent, _ = make_conversation(session, customer("mail me at jo@example.com"))
        old_id, recent_id = old.id, recent.id
    settings = Settings(retention_days=30, retention_every_hours=0.0001)

    async def run_a_few_passes() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(retention_loop(settings, engine), timeout=2)

    asyncio.run(run_a_few_passes())
    with Session(engine) as session:
        assert crud.list_messages(session=session, conversation_id=old_id)[0].text == "mail me at [email]"
        assert crud.list_messages(session=session, conversation_id=recent_id)[0].text == "mail me at jo@example.com"
    assert asyncio.run(retention_loop(settings.model_copy(update={"retention_every_hours": 0}), engine)) is None
