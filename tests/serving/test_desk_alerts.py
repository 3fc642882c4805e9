"""Alerts when a customer waits for a human: e-mail to on-duty staff through a real SMTP server, and signed JSON
to webhooks over real HTTP, retried with back-off, logged for admins, sent off the customer's turn and kept in
the database across a restart."""

import hashlib
import hmac
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from sqlmodel import Session

from bot.domain import default_pack_path
from conversations import crud
from conversations.models import StaffRole
from serving.app import create_app
from tests.bot.test_dialogue import KeywordClassifier
from tests.conftest import stand_in_settings_at
from tests.utils.conversation import open_conversation, send
from tests.utils.desk import SmtpServer, WebhookReceiver, wait_for
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.ports import free_port
from tests.utils.staff import make_staff

SECRET = "webhook-signing-secret-0123"
GERMAN = "Guten Tag, wo ist meine Bestellung? Ich warte seit zwei Wochen darauf."


def desk_settings(folder: Path, vllm: FakeVLLM, base_model: Path, smtp_port: int, **overrides: object):
    return stand_in_settings_at(
        folder, vllm, base_model, smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_security="none",
        **{"alert_retry_base_s": 0.3, "alert_poll_s": 0.5, **overrides},
    )  # fmt: skip


def test_a_handoff_alerts_on_duty_staff_by_email_and_a_signed_webhook_retried_after_a_failure(
    stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path: Path
) -> None:
    with (
        SmtpServer() as smtp,
        WebhookReceiver(SECRET, fail_first=1, hold_first=True) as hook,
        TestClient(create_app(desk_settings(tmp_path, stand_in_vllm, base_model_dir, smtp.port))) as http,
    ):
        engine = http.app.state.services.engine
        admin = make_staff(engine, "ada@example.com", "Ada Admin", StaffRole.admin)
        make_staff(engine, "bea@example.com", "Bea Staff")
        away = make_staff(engine, "cy@example.com", "Cy Away")
        off = http.put(f"/api/staff/accounts/{away.id}/duty", json={"on_duty": False}, cookies=away.cookies,
                       headers=away.headers)  # fmt: skip
        assert off.status_code == 200 and off.json()["on_duty"] is False
        added = http.post("/api/staff/webhooks", json={"name": "team chat", "url": hook.url, "secret": SECRET},
                          cookies=admin.cookies, headers=admin.headers)  # fmt: skip
        assert added.status_code == 201 and "secret" not in added.json()

        # A customer writing in a language the bot does not serve is handed to a teammate at once.
        cid, customer = open_conversation(http)
        events = send(http, cid, customer, GERMAN)
        [reply] = [data for name, data in events if name == "bot_message"]
        assert reply["decision"] == "handoff" and "nur auf Englisch" in reply["text"]
        # The reply reached the customer while the webhook's first call was still waiting for its answer.
        assert hook.held.wait(10), "the webhook was not called"
        assert not hook.calls
        hook.release()

        wait_for(lambda: len(smtp.messages) >= 2, what="two alert e-mails")
        [to_ada] = smtp.to("ada@example.com")
        assert smtp.to("bea@example.com") and not smtp.to("cy@example.com")  # off duty: no e-mail
        assert str(to_ada["Subject"]).strip().startswith("[supportbot] A customer is waiting for a human")
        body = to_ada.get_content()
        assert GERMAN in body and f"/console/conversations/{cid}" in body and "Language: de" in body

        wait_for(lambda: len(hook.calls) >= 2, what="the webhook's retry")
        first, second = hook.calls[:2]
        assert first.answered == 500 and second.answered == 200
        assert first.signature_ok and second.signature_ok
        assert first.delivery == second.delivery and second.body["attempt"] == 2
        assert second.event == "handoff" and second.body["conversation_id"] == cid
        assert second.body["text"] == GERMAN and second.body["language"] == "de"

        log = http.get("/api/staff/alerts/deliveries", cookies=admin.cookies).json()
        webhook_rows = [row for row in log if row["kind"] == "webhook"]
        assert [(row["status"], row["attempts"]) for row in webhook_rows] == [("sent", 2)]
        assert sorted(row["target"] for row in log if row["kind"] == "email") == ["ada@example.com", "bea@example.com"]
        assert http.get("/api/staff/alerts/deliveries", cookies=make_staff(engine, "d@example.com", "D").cookies
                        ).status_code == 403  # fmt: skip

        # The customer writes again while waiting: whoever may answer hears of it too.
        send(http, cid, customer, "Hallo? Ist da jemand?")
        wait_for(lambda: any(c.event == "customer_message" for c in hook.calls), what="the new-message webhook")
        wait_for(lambda: len(smtp.to("ada@example.com")) == 2, what="the new-message e-mail")
        assert "Hallo? Ist da jemand?" in smtp.to("ada@example.com")[-1].get_content()


def test_a_delivery_that_failed_before_a_restart_goes_out_after_it(
    stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there yet: the SMTP server is down
    settings = desk_settings(tmp_path, stand_in_vllm, base_model_dir, port, alert_retry_base_s=1.0)
    with TestClient(create_app(settings)) as http:
        engine = http.app.state.services.engine
        make_staff(engine, "ada@example.com", "Ada Admin", StaffRole.admin)
        cid, customer = open_conversation(http)
        send(http, cid, customer, GERMAN)

        def failed_once():
            with Session(engine) as session:
                rows = crud.list_deliveries(session=session)
                return rows and rows[0].attempts >= 1 and rows[0].status == "pending"

        wait_for(failed_once, what="a failed first attempt")
    with SmtpServer(port) as smtp, TestClient(create_app(settings)) as http:
        wait_for(lambda: smtp.to("ada@example.com"), what="the e-mail after the restart")

        def delivered():
            # The server has the e-mail a moment before the app writes down that it went out.
            with Session(http.app.state.services.engine) as session:
                [row] = crud.list_deliveries(session=session)
                return row if row.status != "pending" else None

        row = wait_for(delivered, what="the delivery to be marked")
        assert row.status == "sent" and row.attempts >= 2 and row.last_error is None
        assert len(smtp.to("ada@example.com")) == 1


def test_the_signature_is_hmac_sha256_of_the_exact_body() -> None:
    from serving.desk import sign

    body = b'{"event": "handoff"}'
    assert sign(SECRET, body) == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body + b" ") != sign(SECRET, body)


def closed_pack(folder: Path) -> Path:
    """The demo pack with today and the days around it as holidays: its team is away whenever the test runs."""
    pack = folder / "closed-pack"
    shutil.copytree(default_pack_path(), pack)
    data = yaml.safe_load((pack / "pack.yaml").read_text())
    today = datetime.now(UTC).date()
    data["business_hours"]["holidays"] = [today + timedelta(days=offset) for offset in range(-2, 3)]
    (pack / "pack.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    return pack


def test_outside_hours_the_customer_leaves_an_email_and_gets_the_teams_answer_there(
    stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path: Path
) -> None:
    with SmtpServer() as smtp:
        settings = desk_settings(tmp_path, stand_in_vllm, base_model_dir, smtp.port, domain_pack=closed_pack(tmp_path))
        with TestClient(create_app(settings)) as http:
            services = http.app.state.services
            services.dialogue.classifier.switch(KeywordClassifier())  # "a human" is the human_agent intent
            ada = make_staff(services.engine, "ada@example.com", "Ada Admin", StaffRole.admin)
            cid, customer = open_conversation(http)
            [reply] = [
                data for name, data in send(http, cid, customer, "I want a human please") if name == "bot_message"
            ]
            assert reply["decision"] == "handoff"
            assert "away right now" in reply["text"] and "e-mail address" in reply["text"]
            assert re.search(r"will answer you here \w+ \d+ \w+ at 09:00 E[SD]T", reply["text"]), reply["text"]
            alert = wait_for(lambda: smtp.to("ada@example.com"), what="the staff alert")[0]
            assert "outside business hours" in alert.get_content()

            send(http, cid, customer, "Sure, my e-mail is grace@example.com")
            ticket = http.get(f"/api/staff/conversations/{cid}/assignment", cookies=ada.cookies).json()
            assert ticket["outside_hours"] is True and ticket["customer_email"] == "grace@example.com"

            http.post(f"/api/staff/conversations/{cid}/claim", cookies=ada.cookies, headers=ada.headers)
            answer = "Hi Grace, Ada here: your replacement lamp ships tomorrow."
            http.post(f"/api/staff/conversations/{cid}/messages", json={"text": answer}, cookies=ada.cookies,
                      headers=ada.headers)  # fmt: skip
            [mail] = wait_for(lambda: smtp.to("grace@example.com"), what="the answer e-mailed to the customer")
            assert str(mail["Subject"]).strip() == "Lumen & Loom: an answer to your question"
            assert answer in mail.get_content() and "Ada Admin answered you" in mail.get_content()
