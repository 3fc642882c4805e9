"""Transcripts leave as JSONL or CSV with their reviews, masked by default, and JSONL comes back in whole."""

import csv
import io
import json
import threading
import time
from datetime import UTC, datetime

import pytest
from sqlmodel import Session

from conversations import crud, transfer
from conversations.db import make_engine, upgrade_db
from conversations.filters import ConversationFilter
from conversations.models import ConversationStatus, Rating, Role
from conversations.transfer import ExportTooLarge, ImportFailed, export_csv, export_jsonl, import_jsonl
from tests.utils.store import bot, customer, make_conversation, staff

EVERYTHING = ConversationFilter(limit=None)
STARTED = datetime(2025, 2, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def reviewed(session: Session) -> str:
    """A conversation with personal data, a staff reply, a review, a relabel, ratings, tags and CSAT."""
    conversation, messages = make_conversation(
        session,
        customer("Hi, I'm jane@example.com, call +49 30 1234 5678", "greeting", 0.81),
        bot(
            'Hello! Your order "LL-104233", ships, soon\nsecond line',
            decision="answer",
            model="adapter-3",
            prompt_tokens=310,
            completion_tokens=12,
            latency_ms=850.0,
        ),
        customer('=HYPERLINK("x") pay with 4111 1111 1111 1111?', "payment", 0.42),
        staff("A colleague here: yes, that card works.", author="Ana"),
        status=ConversationStatus.resolved,
        created_at=STARTED,
    )
    bot_reply, card_question = messages[1], messages[2]
    crud.save_review(
        session=session,
        message_id=bot_reply.id,  # type: ignore[arg-type]
        rating="bad",
        reviewer_id=2,
        expected_version=0,
        corrected_text="It ships tomorrow; we will mail jane@example.com.",
    )
    crud.relabel_intent(session=session, message_id=card_question.id, new_intent="payment_methods")  # type: ignore[arg-type]
    crud.rate_reply(session=session, conversation_id=conversation.id, message_id=bot_reply.id, rating=Rating.down)  # type: ignore[arg-type]
    crud.rate_conversation(
        session=session, conversation_id=conversation.id, score=4, comment="reach me on 555-123-4567"
    )
    crud.add_tag(session=session, conversation_id=conversation.id, name="payments")
    crud.add_tag(session=session, conversation_id=conversation.id, name="angry")
    crud.mark_conversation(
        session=session, conversation_id=conversation.id, reviewed=True, use_for_training=True, expected_version=0
    )
    return conversation.id


def records(session: Session, mask: bool = True) -> list[dict]:
    return [json.loads(line) for line in export_jsonl(session=session, filters=EVERYTHING, mask=mask)]


def test_jsonl_has_chat_messages_and_review_metadata(session: Session, reviewed: str) -> None:
    [record] = records(session, mask=False)
    assert record["messages"] == [
        {"role": "user", "content": "Hi, I'm jane@example.com, call +49 30 1234 5678"},
        {"role": "assistant", "content": 'Hello! Your order "LL-104233", ships, soon\nsecond line'},
        {"role": "user", "content": '=HYPERLINK("x") pay with 4111 1111 1111 1111?'},
        {"role": "assistant", "content": "A colleague here: yes, that card works."},
    ]
    meta = record["metadata"]
    assert (meta["conversation_id"], meta["channel"], meta["status"]) == (reviewed, "widget", "resolved")
    assert datetime.fromisoformat(meta["created_at"]) == STARTED
    assert meta["csat"] == {"score": 4, "comment": "reach me on 555-123-4567"}
    assert meta["tags"] == ["angry", "payments"]
    assert meta["reviewed"] is True and meta["use_for_training"] is True
    assert meta["reviews"] == [
        {"rating": "bad", "corrected_text": "It ships tomorrow; we will mail jane@example.com."},
        None,
    ]
    assert meta["feedback"] == ["down", None]
    assert meta["authors"] == [None, {"role": "staff", "name": "Ana"}]
    assert meta["intents"] == [
        {"intent": "greeting", "predicted": "greeting", "confidence": 0.81},
        {"intent": "payment_methods", "predicted": "payment", "confidence": 0.42},
    ]
    assert len(meta["times"]) == 4


def test_exports_mask_personal_data_by_default(session: Session, reviewed: str) -> None:
    [record] = records(session)
    text = json.dumps(record)
    for secret in ("jane@example.com", "1234 5678", "4111 1111", "555-123-4567"):
        assert secret not in text
    assert record["messages"][0]["content"] == "Hi, I'm [email], call [phone]"
    assert record["metadata"]["reviews"][0]["corrected_text"] == "It ships tomorrow; we will mail [email]."
    assert "LL-104233" in text  # order numbers are not personal data
    csv_text = "".join(export_csv(session=session, filters=EVERYTHING))
    assert "jane@example.com" not in csv_text and "[card]" in csv_text and "[phone]" in csv_text
    assert "jane@example.com" in "".join(export_csv(session=session, filters=EVERYTHING, mask=False))


def test_csv_has_a_row_per_message(session: Session, reviewed: str) -> None:
    rows = list(csv.DictReader(io.StringIO("".join(export_csv(session=session, filters=EVERYTHING, mask=False)))))
    assert [(row["role"], row["source"]) for row in rows] == [
        ("user", "customer"),
        ("assistant", "bot"),
        ("user", "customer"),
        ("assistant", "staff"),
    ]
    assert rows[1]["content"] == 'Hello! Your order "LL-104233", ships, soon\nsecond line'  # quoting survives
    assert (rows[1]["review_rating"], rows[1]["feedback"], rows[1]["model"], rows[1]["prompt_tokens"]) == (
        "bad",
        "down",
        "adapter-3",
        "310",
    )
    assert (rows[2]["intent"], rows[2]["predicted_intent"], rows[2]["confidence"]) == (
        "payment_methods",
        "payment",
        "0.42",
    )
    # A cell a spreadsheet would run as a formula is kept as text.
    assert rows[2]["content"].startswith("'=HYPERLINK")
    assert rows[3]["author"] == "Ana" and rows[0]["tags"] == "angry;payments" and rows[0]["csat_score"] == "4"


def test_jsonl_round_trip_through_import(session: Session, reviewed: str) -> None:
    exported = list(export_jsonl(session=session, filters=EVERYTHING, mask=False))
    result = import_jsonl(session=session, lines=exported)
    assert (result.conversations, result.messages) == (1, 4)

    imported_filter = ConversationFilter(channel="import", limit=None)
    [again] = [json.loads(line) for line in export_jsonl(session=session, filters=imported_filter, mask=False)]
    [original] = [json.loads(line) for line in exported]
    assert again["messages"] == original["messages"]
    for key in (
        "created_at",
        "updated_at",
        "csat",
        "tags",
        "reviewed",
        "use_for_training",
        "reviews",
        "feedback",
        "authors",
        "intents",
        "times",
    ):
        assert again["metadata"][key] == original["metadata"][key], key
    assert again["metadata"]["conversation_id"] != reviewed
    assert (again["metadata"]["channel"], again["metadata"]["status"]) == ("import", "resolved")
    imported = crud.get_conversation(session=session, conversation_id=again["metadata"]["conversation_id"])
    assert imported.token_hash != crud.get_conversation(session=session, conversation_id=reviewed).token_hash
    staff_reply = crud.list_messages(session=session, conversation_id=imported.id)[3]
    assert (staff_reply.role, staff_reply.author) == (Role.staff, "Ana")


def test_import_of_another_systems_history(session: Session) -> None:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You are a shop assistant."},
                    {"role": "user", "content": "Do you ship to Norway?"},
                    {"role": "assistant", "content": "Yes, in 5 days."},
                ]
            }
        ),
        "",
        json.dumps(
            {
                "messages": [{"role": "user", "content": "hi"}],
                "metadata": {"created_at": "2024-06-01T10:00:00", "tags": ["Legacy"], "source_id": 17},
            }
        ),
    ]
    assert import_jsonl(session=session, lines=lines).conversations == 2
    exported = [json.loads(line) for line in export_jsonl(session=session, filters=EVERYTHING, mask=False)]
    assert exported[0]["messages"][0] == {"role": "user", "content": "hi"}  # oldest first
    assert exported[0]["metadata"]["created_at"].startswith("2024-06-01T10:00:00")
    assert exported[0]["metadata"]["tags"] == ["legacy"]
    assert [m["role"] for m in exported[1]["messages"]] == ["user", "assistant"]  # the system prompt is dropped


def test_a_bad_line_stores_nothing_and_says_where(session: Session, reviewed: str) -> None:
    good = next(export_jsonl(session=session, filters=EVERYTHING, mask=False))
    lines = [
        good,
        '{"messages": [{"role": "user", "content": "hi"}',
        json.dumps({"messages": [{"role": "robot", "content": "beep"}]}),
        json.dumps({"messages": [{"role": "assistant", "content": "a"}], "metadata": {"reviews": []}}),
        json.dumps({"messages": []}),
        good,
    ]
    with pytest.raises(ImportFailed) as failed:
        import_jsonl(session=session, lines=lines)
    errors = failed.value.errors
    assert errors[0].startswith("line 2: not valid JSON")
    assert any(e.startswith("line 3: messages.0.role") for e in errors)
    assert any(e.startswith("line 4:") and "metadata.reviews has 0 entries for 1 assistant turns" in e for e in errors)
    assert any(e.startswith("line 5: messages") for e in errors)
    assert not any(e.startswith(("line 1:", "line 6:")) for e in errors)
    assert "nothing was stored" in str(failed.value)
    assert crud.count_conversations(session=session, filters=EVERYTHING) == 1


def test_huge_exports_are_refused_before_writing(session: Session) -> None:
    for index in range(3):
        make_conversation(session, customer(f"question {index}"), bot("answer"))
    with pytest.raises(ExportTooLarge, match="matches 3 conversations, more than the export limit of 2"):
        export_jsonl(session=session, filters=EVERYTHING, max_rows=2)
    with pytest.raises(ExportTooLarge, match="matches 6 messages"):
        export_csv(session=session, filters=EVERYTHING, max_rows=5)
    assert len(list(export_jsonl(session=session, filters=EVERYTHING, max_rows=3))) == 3
    # A filter narrows what is counted.
    assert (
        len(
            list(export_jsonl(session=session, filters=ConversationFilter(search="question 1", limit=None), max_rows=1))
        )
        == 1
    )


def conversation_line(number: int) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"Where is order {number}?"},
                {"role": "assistant", "content": "It ships tomorrow."},
                {"role": "user", "content": "Thanks"},
                {"role": "assistant", "content": "You are welcome."},
            ],
            "metadata": {"tags": ["legacy"]},
        }
    )


def test_a_failure_in_a_later_batch_takes_back_the_batches_stored(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 2)
    real_store = transfer._store
    calls = []

    def failing_store(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return real_store(*args, **kwargs)

    monkeypatch.setattr(transfer, "_store", failing_store)
    with pytest.raises(OSError, match="disk full"):
        import_jsonl(session=session, lines=[conversation_line(n) for n in range(6)])
    assert crud.count_conversations(session=session, filters=EVERYTHING) == 0


def test_customers_keep_writing_during_a_large_import(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    importer = make_engine(url)
    upgrade_db(importer)
    # Customers wait at most two seconds for SQLite's write lock, as the app waits db_wait_s (10 s by default).
    customers = make_engine(url, wait_s=2.0)
    with Session(customers) as session:
        conversation, _ = crud.create_conversation(session=session)
    failures: list[Exception] = []
    written = []
    done = threading.Event()

    def customer_writes() -> None:
        while not done.is_set():
            try:
                with Session(customers) as session:
                    crud.add_message(session=session, conversation_id=conversation.id, role=Role.customer, text="hi")
                written.append(1)
            except Exception as error:  # noqa: BLE001 - every failure is what the test counts
                failures.append(error)
            time.sleep(0.05)

    writer = threading.Thread(target=customer_writes)
    writer.start()
    try:
        with Session(importer) as session:
            result = import_jsonl(session=session, lines=[conversation_line(n) for n in range(3000)])
    finally:
        done.set()
        writer.join()
    assert result.conversations == 3000
    assert failures == [] and len(written) > 5
