"""The support desk's costs on a scratch SQLite store: alert deliveries sent per second to a real SMTP server and
a real webhook receiver, what queueing a handoff's alerts adds to a customer's turn, language detection per
message, a 30-day report over N conversations, and finding and erasing one customer among them.

    .venv/bin/python tests/bench/bench_desk.py --conversations 3000 --deliveries 300
"""

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session

from bot.domain import default_pack_path, load_pack
from bot.language import LanguageDetection
from conversations import crud
from conversations.data_rights import erase_customer, find_customer
from conversations.db import make_engine, upgrade_db
from conversations.models import Message, Role, StaffRole
from conversations.reports import build_report
from core.settings import Settings
from serving.desk import AlertSender, Desk
from tests.utils.desk import SmtpServer, WebhookReceiver

SECRET = "bench-webhook-secret-0123"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def seed(engine, conversations: int) -> None:
    start = datetime.now(UTC) - timedelta(days=29)
    with Session(engine) as session:
        for number in range(conversations):
            conversation, _ = crud.create_conversation(session=session, channel="widget")
            conversation.created_at = start + timedelta(minutes=number * 14)
            session.add(conversation)
            text = f"Where is my order LL-{100000 + number}? Write to customer{number % 500}@example.com"
            handoff = number % 7 == 0
            session.add_all([
                Message(conversation_id=conversation.id, role=Role.customer, text=text, intent="order_status"),
                Message(conversation_id=conversation.id, role=Role.bot, text="Let me check.",
                        decision="handoff" if handoff else "answer",
                        trace={"reason": "not understood twice"} if handoff else {}),
            ])  # fmt: skip
            if number % 200 == 199:
                session.commit()
        session.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=3000)
    parser.add_argument("--deliveries", type=int, default=300)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'bench.db'}")
        upgrade_db(engine)
        with SmtpServer() as smtp, WebhookReceiver(SECRET, fail_first=0) as hook:
            settings = Settings(data_dir=Path(scratch), smtp_host="127.0.0.1", smtp_port=smtp.port,
                                smtp_security="none", alert_retry_base_s=0.1)  # fmt: skip
            pack = load_pack(default_pack_path())
            desk = Desk(engine=engine, settings=settings, pack=pack)
            with Session(engine) as session:
                for index in range(3):
                    crud.create_staff(session=session, email=f"staff{index}@example.com", display_name=f"Staff {index}",
                                      password_hash="x", role=StaffRole.staff)  # fmt: skip
                crud.create_webhook(session=session, name="bench", url=hook.url, secret=SECRET)
                conversation, _ = crud.create_conversation(session=session)
                cid = conversation.id

            # What a handoff adds to the customer's turn: the ticket and its alerts, queued (3 e-mails, 1 webhook).
            added = []
            for _ in range(50):
                with Session(engine) as session:
                    began = time.perf_counter()
                    desk.handed_off(session, cid, reason="bench", customer_text="I want a human")
                    added.append(time.perf_counter() - began)
            queued = 50 * 4
            p95 = sorted(added)[int(len(added) * 0.95)]
            print(f"handoff bookkeeping on the turn: p50 {ms(statistics.median(added))}, p95 {ms(p95)} "
                  f"(ticket + {queued // 50} queued alerts)")  # fmt: skip

            with Session(engine) as session:
                for number in range(args.deliveries - queued):
                    crud.enqueue_alert(session=session, event="handoff", conversation_id=cid, payload={"n": number},
                                       emails=[f"staff{number % 3}@example.com"], webhooks=number % 2 == 0)  # fmt: skip
                total = len(crud.list_deliveries(session=session, limit=100_000))
            sender = AlertSender(engine, settings)
            began = time.perf_counter()
            sent = 0
            while sent < total:
                sent += sender.send_due()
            elapsed = time.perf_counter() - began
            print(f"alert deliveries: {total} sent in {elapsed:.2f} s = {total / elapsed:.0f}/s "
                  f"(SMTP {len(smtp.messages)}, webhook {len(hook.calls)}, one sender, sequential)")  # fmt: skip

        detection = LanguageDetection([*pack.languages, *pack.language_messages])
        examples = [example for intent in pack.intents for example in intent.examples]
        began = time.perf_counter()
        detection.detect("Wo ist meine Bestellung? Ich warte seit zwei Wochen.")
        first = time.perf_counter() - began
        began = time.perf_counter()
        for text in examples:
            detection.detect(text)
        per = (time.perf_counter() - began) / len(examples)
        print(f"language detection: first call (loads models) {ms(first)}, then {ms(per)} per message "
              f"over {len(examples)} examples")  # fmt: skip

        seed(engine, args.conversations)
        with Session(engine) as session:
            today = datetime.now(UTC).date()
            began = time.perf_counter()
            report = build_report(session=session, since=today - timedelta(days=29), until=today)
            print(f"30-day report over {report.conversations} conversations: {ms(time.perf_counter() - began)}")
            began = time.perf_counter()
            found = find_customer(session=session, email="customer7@example.com")
            print(f"find one customer among them: {len(found)} conversations in {ms(time.perf_counter() - began)}")
            began = time.perf_counter()
            erased = erase_customer(session=session, email="customer7@example.com")
            print(f"erase that customer: {erased.conversations} conversations, {erased.messages} messages in "
                  f"{ms(time.perf_counter() - began)}")  # fmt: skip
        engine.dispose()


if __name__ == "__main__":
    main()
