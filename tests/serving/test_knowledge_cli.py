"""`supportbot kb ...` as an administrator runs it, and two app replicas picking up the change without
a restart: the pack's articles on first use, re-import as a new version, bad files storing nothing."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from bot.dialogue import DialogueManager
from bot.domain import default_pack_path, load_pack
from bot.grounding import rank_sentences
from bot.knowledge import SentenceEncoder
from bot.selection import by_rules
from cli.main import app
from conversations import knowledge as kb
from conversations.db import make_engine, upgrade_db
from core.settings import Settings, get_settings
from serving.app import create_app
from serving.knowledge import KnowledgeSync
from tests.utils.ports import free_port

RETURNS_60 = "# Returns\n\nYou can return most items within 60 days of delivery. Items must be unused.\n"


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The CLI and the replicas on one fresh database, named by its environment variable."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("SUPPORTBOT_DATABASE_URL", url)
    get_settings.cache_clear()
    engine = make_engine(url)
    upgrade_db(engine)
    yield engine
    engine.dispose()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


def kb_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["kb", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout + result.stderr


def revision(engine: Engine) -> int:
    with Session(engine) as session:
        return kb.knowledge_revision(session=session)


def test_import_list_and_retire_with_history(engine: Engine, tmp_path: Path) -> None:
    code, out = kb_cli("list")
    assert code == 0 and "returns" in out and "domain pack" in out  # the pack's articles, on first use
    assert len(load_pack(default_pack_path()).articles) == out.count(" live ")

    (tmp_path / "help").mkdir()
    (tmp_path / "help" / "returns.md").write_text(RETURNS_60, encoding="utf-8")
    (tmp_path / "help" / "gift-wrap.html").write_text(
        "<html><body><h1>Gift wrapping</h1><p>We gift-wrap any order for $4.50.</p></body></html>", encoding="utf-8"
    )
    code, out = kb_cli("import", str(tmp_path / "help"), "--by", "ana@example.com")
    assert code == 0, out
    assert "gift-wrap" in out and "created" in out and "edited" in out and "2 of 2 article(s)" in out

    code, out = kb_cli("import", str(tmp_path / "help" / "returns.md"))
    assert code == 0 and "unchanged" in out and "0 of 1" in out

    code, out = kb_cli("history", "returns")
    assert code == 0 and "edited" in out and "ana@example.com" in out and "created" in out and "domain pack" in out

    code, out = kb_cli("retire", "gift-wrap", "--by", "ana@example.com")
    assert code == 0 and "retired" in out
    code, out = kb_cli("list")
    assert "gift-wrap" not in out
    code, out = kb_cli("list", "--retired")
    assert "gift-wrap" in out and "retired" in out
    code, out = kb_cli("retire", "nope")
    assert code == 1 and "No help article 'nope'" in out


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.md", b"", "the file is empty"),
        ("binary.txt", bytes(range(256)) * 8, "binary file"),
        ("broken.html", b"<html><body><p>Returns within 60 days</p><img src='x", "broken HTML"),
    ],
)
def test_a_bad_file_stores_nothing(engine: Engine, tmp_path: Path, name: str, content: bytes, message: str) -> None:
    kb_cli("list")
    before = revision(engine)
    (tmp_path / "returns.md").write_text(RETURNS_60, encoding="utf-8")  # a good file in the same import
    (tmp_path / name).write_bytes(content)
    code, out = kb_cli("import", str(tmp_path))
    assert code == 1 and "Nothing imported" in out and message in out and name in out
    assert revision(engine) == before


def test_a_50_mb_file_stores_nothing(engine: Engine, tmp_path: Path) -> None:
    kb_cli("list")
    before = revision(engine)
    with (tmp_path / "manual.txt").open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    code, out = kb_cli("import", str(tmp_path / "manual.txt"))
    assert code == 1 and "at most 5 MB" in out and revision(engine) == before


def test_every_replica_answers_from_the_new_text_without_a_restart(
    engine: Engine, encoder: SentenceEncoder, tmp_path: Path
) -> None:
    pack = load_pack(default_pack_path())
    replicas = [KnowledgeSync.start(engine, pack, encoder), KnowledgeSync.start(engine, pack, encoder)]
    question = "How many days do I have to return something?"
    for replica in replicas:
        assert "within 30 days" in replica.index.current().search(question)[0].passage.text
        assert replica.refresh() is False  # nothing changed: no rebuild

    (tmp_path / "returns.md").write_text(RETURNS_60, encoding="utf-8")
    assert kb_cli("import", str(tmp_path / "returns.md"))[0] == 0
    for replica in replicas:
        assert replica.refresh() is True
        top = replica.index.current().search(question)[0]
        assert "within 60 days" in top.passage.text and top.passage.version == 2
        # The new snapshot's sentences were embedded before it was served: no customer turn waits for them.
        assert replica.index.current().embed_sentences() == 0

    assert kb_cli("retire", "returns")[0] == 0
    replicas[0].refresh()
    assert "returns" not in {hit.passage.article_slug for hit in replicas[0].index.current().search(question, k=5)}


def test_two_running_apps_pick_up_an_import_by_themselves(engine: Engine, tmp_path: Path, base_model_dir: Path) -> None:
    """Two app processes' worth of services on one database: each one's own poll finds the import."""
    settings = [
        Settings(
            data_dir=tmp_path / f"app-{number}",
            database_url=str(engine.url),
            base_model=base_model_dir,
            vllm_url=f"http://127.0.0.1:{free_port()}",
        )  # fmt: skip
        for number in range(2)
    ]
    question = "How many days do I have to return something?"
    with TestClient(create_app(settings[0])) as first, TestClient(create_app(settings[1])) as second:
        apps = [first.app.state.services, second.app.state.services]  # type: ignore[attr-defined]
        for services in apps:
            assert "within 30 days" in services.knowledge.index.current().search(question)[0].passage.text
        (tmp_path / "returns.md").write_text(RETURNS_60, encoding="utf-8")
        assert kb_cli("import", str(tmp_path / "returns.md"))[0] == 0
        deadline = time.monotonic() + 30
        while not all("within 60 days" in s.knowledge.index.current().search(question)[0].passage.text for s in apps):
            assert time.monotonic() < deadline, "an app did not pick up the import within 30 s"
            time.sleep(0.2)
        # The dialogue answers from the same index the poll swapped.
        assert all(s.dialogue.knowledge is s.knowledge.index for s in apps)


FAQ = """# Help

## How do I move my plan to a new address?

Moving takes a few minutes online. To move your plan:

1. Sign in and open My plan.
2. Choose Move address.
3. Enter the new address and the moving date.
4. Pick a time for the engineer's visit.
5. Confirm, and keep the reference we e-mail you.

## What do I pay?

Our prices are:

- Basic plan, $20 a month
- Fast plan, $35 a month
"""


def test_an_imported_faq_answers_a_how_to_with_its_whole_procedure(
    engine: Engine, encoder: SentenceEncoder, tmp_path: Path
) -> None:
    (tmp_path / "moving.md").write_text(FAQ, encoding="utf-8")
    assert kb_cli("import", str(tmp_path / "moving.md"))[0] == 0
    index = KnowledgeSync.start(engine, load_pack(default_pack_path()), encoder).index.current()
    question = "how can i transfer my service to my new home?"  # none of the article's words for it
    hits = [hit for hit in index.search(question, k=4) if hit.relevant]
    cosine = index.sentence_similarity(question, [hit.passage for hit in hits])
    ranked = rank_sentences(
        question, [hit.passage.text for hit in hits], passage_scores=[hit.score for hit in hits],
        similarity=lambda _, sentences: [cosine.get(sentence, 0.0) for sentence in sentences],
    )  # fmt: skip
    reply = DialogueManager.fallback(by_rules(ranked), [], [hit.passage for hit in hits])
    assert reply.splitlines() == [
        "Moving takes a few minutes online. To move your plan:",
        "1. Sign in and open My plan.",
        "2. Choose Move address.",
        "3. Enter the new address and the moving date.",
        "4. Pick a time for the engineer's visit.",
        "5. Confirm, and keep the reference we e-mail you.",
    ], reply
