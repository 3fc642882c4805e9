"""Two app replicas (`supportbot start` processes) on one PostgreSQL, as Kubernetes runs them: both sweep for the
same abandoned messages, unanswered tickets and due retention at the same moments, and each is done once (one
apology per message, one reassignment and one alert e-mail per ticket, one retention run), while customers
chatting through both replicas at once get no server error and lose nothing.

The model server is the stand-in (tests/utils/fake_vllm.py); the e-mail goes to a real SMTP server.
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from conversations import crud
from conversations.db import make_engine, upgrade_db
from conversations.models import (
    AuditLog,
    Conversation,
    ConversationStatus,
    DeskTicket,
    Message,
    PeriodicJob,
    Role,
    utcnow,
)
from conversations.retention import ANONYMISED_TOKEN_HASH
from tests.bench.bench_serving import question
from tests.utils import load
from tests.utils.desk import SmtpServer, wait_for
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.ports import free_port
from tests.utils.server import start_process, wait_ready
from tests.utils.staff import make_staff

ABANDONED = 60
TICKETS = 20
CONVERSATIONS, TURNS = 16, 3
REASSIGN_AFTER_MINUTES = 10
ASSIGNED_TO_YOU = "A waiting conversation was assigned to you"


def seed_waiting_work(engine: Engine, ada: int) -> tuple[dict[int, str], list[str]]:
    """In one commit, so both replicas find it at their next sweep: customer messages ten minutes old that were
    never answered (message id -> conversation id), and conversations waiting for a human, given to Ada an hour
    ago and never answered (their ids)."""
    ten_minutes_ago, an_hour_ago = utcnow() - timedelta(minutes=10), utcnow() - timedelta(hours=1)
    with Session(engine) as session:
        abandoned = [Conversation(token_hash=crud.hash_token(f"a{index}")) for index in range(ABANDONED)]
        waiting = [
            Conversation(token_hash=crud.hash_token(f"w{index}"), status=ConversationStatus.pending_human)
            for index in range(TICKETS)
        ]
        session.add_all(abandoned + waiting)
        session.flush()
        messages = [
            Message(conversation_id=conversation.id, role=Role.customer, text="Hello? Anyone?",
                    created_at=ten_minutes_ago)
            for conversation in abandoned
        ]  # fmt: skip
        tickets = [
            DeskTicket(conversation_id=conversation.id, assignee_id=ada, assigned_at=an_hour_ago,
                       waiting_since=an_hour_ago, reason="handoff: asked for a person")
            for conversation in waiting
        ]  # fmt: skip
        session.add_all(messages + tickets)
        session.commit()
        return {message.id: message.conversation_id for message in messages}, [c.id for c in waiting]  # type: ignore[misc]


async def chat_across(urls: list[str]) -> tuple[load.Run, list[load.Customer]]:
    """CONVERSATIONS customers at once, each opening on one replica and sending its turns to both in turn."""
    run = load.Run()
    timeout = httpx.Timeout(connect=30.0, read=120.0, write=30.0, pool=120.0)
    async with (
        httpx.AsyncClient(base_url=urls[0], timeout=timeout) as first,
        httpx.AsyncClient(base_url=urls[1], timeout=timeout) as second,
    ):
        replicas = [first, second]

        async def customer(index: int) -> load.Customer:
            seen = load.Customer(index)
            opened = await load.open_conversation(replicas[index % 2], run, seen)
            if opened is None:
                return seen
            conversation_id, token = opened
            for turn in range(TURNS):
                text = f"{question(index, turn, TURNS)} (#{index}.{turn})"
                await load.send(replicas[(index + turn + 1) % 2], run, seen, conversation_id, token, text)
            await load.check_transcript(replicas[index % 2], run, seen, conversation_id, token)
            return seen

        customers = await asyncio.gather(*(customer(index) for index in range(CONVERSATIONS)))
    return run, list(customers)


def test_two_replicas_on_one_postgresql_do_each_sweep_once(
    postgres_url: str, stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path: Path
) -> None:
    engine = make_engine(postgres_url)
    upgrade_db(engine)
    ada = make_staff(engine, "ada@example.com", "Ada")
    bea = make_staff(engine, "bea@example.com", "Bea")
    # Idle for 400 days: the retention policy (30 days) anonymises it at the first start.
    with Session(engine) as session:
        expired, _ = crud.create_conversation(session=session)
        crud.add_message(session=session, conversation_id=expired.id, role=Role.customer, text="mail me: j@x.org")
        crud.add_message(session=session, conversation_id=expired.id, role=Role.bot, text="We will.")
        expired.updated_at = utcnow() - timedelta(days=400)
        session.add(expired)
        session.commit()
        expired_id = expired.id

    with SmtpServer() as smtp:
        ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        common = {
            **os.environ, "SUPPORTBOT_DATA_DIR": str(tmp_path), "SUPPORTBOT_DATABASE_URL": postgres_url,
            "SUPPORTBOT_VLLM_URLS": json.dumps([stand_in_vllm.url]), "SUPPORTBOT_BASE_MODEL": str(base_model_dir),
            # Sweeps every half second, so the two replicas' sweeps overlap; a chat turn takes far less than 60 s.
            "SUPPORTBOT_UNANSWERED_AFTER_S": "60", "SUPPORTBOT_RECOVERY_EVERY_S": "0.5",
            "SUPPORTBOT_DESK_ROUND_ROBIN": "true",
            "SUPPORTBOT_DESK_REASSIGN_AFTER_MINUTES": str(REASSIGN_AFTER_MINUTES), "SUPPORTBOT_ALERT_POLL_S": "0.3",
            "SUPPORTBOT_SMTP_HOST": "127.0.0.1", "SUPPORTBOT_SMTP_PORT": str(smtp.port),
            "SUPPORTBOT_SMTP_SECURITY": "none", "SUPPORTBOT_RETENTION_DAYS": "30",
            "SUPPORTBOT_NEW_CONVERSATIONS_PER_MINUTE_ADDRESS": "100000",
            "SUPPORTBOT_RATE_LIMIT_PER_MINUTE_ADDRESS": "100000",
        }  # fmt: skip
        logs = [tmp_path / f"replica-{index}.log" for index in range(2)]
        # Started together, as a rollout starts pods: both find retention due at the same moment.
        replicas = [
            start_process({**common, "SUPPORTBOT_PORT": str(port)}, log) for port, log in zip(ports, logs, strict=True)
        ]
        try:
            for url, replica, log in zip(urls, replicas, logs, strict=True):
                wait_ready(url, replica, log, path="/readyz")

            abandoned, waiting = seed_waiting_work(engine, ada.id)
            run, customers = asyncio.run(chat_across(urls))

            def apologies() -> list[Message]:
                with Session(engine) as session:
                    return list(session.exec(select(Message).where(Message.decision == "recovered")).all())

            wait_for(lambda: len(apologies()) >= ABANDONED, timeout_s=60, what="every abandoned message answered")
            wait_for(lambda: len(smtp.to("bea@example.com")) >= TICKETS, timeout_s=60, what="the reassignment alerts")
            time.sleep(3)  # several more sweeps of both replicas: nothing may be done twice
            logged = [log.read_text(errors="replace") for log in logs]
        finally:
            for replica in replicas:
                if replica.poll() is None:
                    replica.send_signal(signal.SIGINT)
            for replica in replicas:
                try:
                    replica.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    replica.kill()

    # One apology per abandoned message, each naming it, and none in the conversations being chatted in.
    answered = Counter(message.recovers_message_id for message in apologies())
    assert set(answered) == set(abandoned) and set(answered.values()) == {1}, answered.most_common(3)
    assert {message.conversation_id for message in apologies()} == set(abandoned.values())

    # One reassignment per ticket: to Bea, audited once, one e-mail telling her.
    with Session(engine) as session:
        tickets = session.exec(select(DeskTicket).where(col(DeskTicket.conversation_id).in_(waiting))).all()
        assert {ticket.assignee_id for ticket in tickets} == {bea.id}
        audits = session.exec(select(AuditLog).where(AuditLog.action == "desk.reassign")).all()
        assert Counter(entry.target for entry in audits) == Counter(f"conversation:{cid}" for cid in waiting)
        jobs = session.exec(select(PeriodicJob)).all()
        anonymised = session.get(Conversation, expired_id)
    alerts = [message for message in smtp.to("bea@example.com") if ASSIGNED_TO_YOU in str(message["Subject"])]
    alerted = Counter(re.search(r"/conversations/(\w+)", alert.get_content()).group(1) for alert in alerts)  # type: ignore[union-attr]
    assert alerted == Counter(waiting), alerted.most_common(3)

    # Retention ran once, on one of the two, and did its work.
    runs = [text.count("retention (anonymise") for text in logged]
    assert sorted(runs) == [0, 1], runs
    # One claim row per periodic job (retention; the stored-embeddings cleanup too, once a replica has run it).
    names = Counter(job.name for job in jobs)
    assert names["retention"] == 1 and set(names.values()) == {1}
    assert set(names) <= {"retention", "knowledge-embeddings"}
    retention = next(job for job in jobs if job.name == "retention")
    assert retention.holder is not None and retention.holder.endswith(tuple(f":{r.pid}" for r in replicas))
    assert anonymised is not None and anonymised.token_hash == ANONYMISED_TOKEN_HASH

    # Chat through both replicas at once: no server error, every message stored and answered.
    results = load.report(run, customers, 0.0)
    assert results["http_5xx"] == 0, results["http"]
    assert results["conversations_opened"] == CONVERSATIONS, results
    assert results["messages_stored"] == CONVERSATIONS * TURNS and results["messages_given_up"] == 0, results
    assert results["messages_lost"] == 0 and results["unanswered"] == 0, results
    assert results["replies"].get("none", 0) == 0, results
    engine.dispose()
