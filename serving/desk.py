"""The support desk beside the chat: alerts to staff (e-mail and signed webhooks, sent from a queue kept in the
database), round-robin assignment and reassignment of unanswered conversations, and staff replies e-mailed to
customers who left their address outside business hours.

Nothing here runs on the customer's turn but a few inserts: deliveries go out from `AlertSender`'s loop.
"""

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

import httpx
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.domain import DomainPack
from conversations import crud
from conversations.models import AlertDelivery, ConversationStatus, utcnow
from core.settings import Settings

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Supportbot-Signature-256"
EVENT_HEADER = "X-Supportbot-Event"
DELIVERY_HEADER = "X-Supportbot-Delivery"
# A sender holds a delivery this long while trying it; one that crashed meanwhile leaves it to another after.
HOLD = timedelta(minutes=2)
# Deliveries one pass of a sender tries at most; the rest wait for the next pass.
BATCH = 20


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 of the exact body with the webhook's secret, as GitHub signs."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)


@dataclass
class Desk:
    """Turns what happens in conversations into tickets, assignments and queued alerts."""

    engine: Engine
    settings: Settings
    pack: DomainPack
    # Called after deliveries are queued, so the sender tries them at once instead of at its next poll.
    on_queued: Callable[[], None] = lambda: None

    def _link(self, conversation_id: str) -> str:
        return f"{self.settings.resolved_console_url}/conversations/{conversation_id}"

    def _alert(
        self, session: Session, event: str, conversation_id: str, details: dict, *, staff_id: int | None = None,
        team: str | None = None,
    ) -> None:  # fmt: skip
        emails = crud.on_duty_emails(session=session, team=team, staff_id=staff_id) if self.settings.smtp_host else []
        payload = {"event": event, "conversation_id": conversation_id, "url": self._link(conversation_id),
                   "at": utcnow().isoformat(), **details}  # fmt: skip
        crud.enqueue_alert(
            session=session, event=event, conversation_id=conversation_id, payload=payload, emails=emails
        )
        self.on_queued()

    def handed_off(
        self, session: Session, conversation_id: str, *, reason: str, customer_text: str, outside_hours: bool = False,
        language: str | None = None,
    ) -> None:  # fmt: skip
        """The bot handed the conversation to people: a ticket, the next teammate in turn (round-robin), alerts."""
        ticket = crud.open_ticket(
            session=session, conversation_id=conversation_id, reason=reason, outside_hours=outside_hours,
            language=language,
        )  # fmt: skip
        if self.settings.desk_round_robin and ticket.assignee_id is None:
            teammate = crud.next_in_turn(session=session, team=ticket.team)
            if teammate is not None:
                ticket = crud.assign_ticket(
                    session=session, conversation_id=conversation_id, assignee_id=teammate.id, team=ticket.team
                )
        assignee = crud.get_staff(session=session, staff_id=ticket.assignee_id) if ticket.assignee_id else None
        details = {"reason": reason, "text": customer_text, "outside_hours": outside_hours, "language": language,
                   "assignee": assignee.display_name if assignee else None, "team": ticket.team}  # fmt: skip
        self._alert(session, "handoff", conversation_id, details, staff_id=ticket.assignee_id, team=ticket.team)

    def customer_wrote(self, session: Session, conversation_id: str, text: str) -> None:
        """A customer wrote in a conversation that waits for (or is with) a human: tell whoever has it."""
        conversation = crud.get_conversation(session=session, conversation_id=conversation_id)
        if conversation.status not in (ConversationStatus.pending_human, ConversationStatus.human):
            return
        owner = crud.get_assignment(session=session, conversation_id=conversation_id)
        ticket = crud.get_ticket(session=session, conversation_id=conversation_id)
        staff_id = owner.staff_id if owner else ticket.assignee_id if ticket else None
        details = {"text": text, "status": str(conversation.status), "team": ticket.team if ticket else None}
        self._alert(session, "customer_message", conversation_id, details, staff_id=staff_id,
                    team=ticket.team if ticket else None)  # fmt: skip

    def remember_email(self, session: Session, conversation_id: str, slots: dict) -> None:
        """Outside business hours the handoff asked for an e-mail address: keep the one the customer gave."""
        ticket = crud.get_ticket(session=session, conversation_id=conversation_id)
        email = slots.get("email")
        if ticket is not None and ticket.outside_hours and email and ticket.customer_email != email:
            crud.set_customer_email(session=session, conversation_id=conversation_id, email=email)

    def staff_replied(self, session: Session, conversation_id: str, author: str, text: str) -> None:
        """A teammate answered: the first-response timer stops, and a customer who left an address gets the answer
        by e-mail as well (their answer comes back through the chat: inbound e-mail is not read)."""
        crud.record_first_response(session=session, conversation_id=conversation_id)
        ticket = crud.get_ticket(session=session, conversation_id=conversation_id)
        if ticket is None or not ticket.customer_email or not self.settings.smtp_host:
            return
        payload = {"author": author, "text": text, "company": self.pack.company_name}
        crud.enqueue_alert(
            session=session, event="staff_reply", conversation_id=conversation_id, payload=payload,
            emails=[ticket.customer_email], webhooks=False,
        )  # fmt: skip
        self.on_queued()

    def reassign_unanswered(self) -> int:
        """Give conversations nobody answered within `desk_reassign_after_minutes` to the next teammate in turn.
        Every app replica sweeps; each ticket moves (and alerts) once, by whichever replica claims it first."""
        minutes = self.settings.desk_reassign_after_minutes
        if minutes <= 0:
            return 0
        moved = 0
        with Session(self.engine) as session:
            cutoff = utcnow() - timedelta(minutes=minutes)
            for ticket in crud.unanswered_assigned(session=session, assigned_before=cutoff):
                teammate = crud.next_in_turn(session=session, team=ticket.team, skip=ticket.assignee_id)
                if teammate is None:
                    continue
                previous = ticket.assignee_id
                assert previous is not None
                moved = crud.reassign_ticket(
                    session=session, conversation_id=ticket.conversation_id, previous_id=previous,
                    assignee_id=teammate.id, assigned_before=cutoff,
                )  # fmt: skip
                if moved is None:
                    continue  # another app replica moved it first (and alerted)
                crud.record_audit(
                    session=session, actor_id=None, action="desk.reassign",
                    target=f"conversation:{ticket.conversation_id}",
                    details={"from_staff": previous, "to_staff": teammate.id, "after_minutes": minutes},
                )  # fmt: skip
                details = {"reason": f"not answered within {minutes:g} minutes", "assignee": teammate.display_name}
                self._alert(session, "reassigned", ticket.conversation_id, details, staff_id=teammate.id)
                moved += 1
        return moved


# --- Sending ---


EVENT_SUBJECTS = {
    "handoff": "A customer is waiting for a human",
    "customer_message": "New message from a customer waiting for you",
    "reassigned": "A waiting conversation was assigned to you",
}


def compose_email(delivery: AlertDelivery, settings: Settings) -> EmailMessage:
    """The e-mail for one delivery: an alert to staff, or a teammate's reply to a customer."""
    payload = delivery.payload
    message = EmailMessage()
    message["From"] = settings.alert_email_from
    message["To"] = delivery.target
    if delivery.event == "staff_reply":
        message["Subject"] = f"{payload.get('company', 'Support')}: an answer to your question"
        message.set_content(
            f"{payload.get('author') or 'Our support team'} answered you:\n\n{payload.get('text', '')}\n\n"
            "To write back, open the chat on our website again: the conversation continues there.\n"
        )
        return message
    subject = EVENT_SUBJECTS.get(delivery.event, delivery.event)
    reason = payload.get("reason")
    message["Subject"] = f"[supportbot] {subject}" + (f" ({reason})" if reason else "")
    lines = [subject + "."]
    if payload.get("text"):
        lines += ["", f"The customer wrote: {payload['text']}"]
    for key, label in (("assignee", "Assigned to"), ("team", "Team"), ("language", "Language")):
        if payload.get(key):
            lines.append(f"{label}: {payload[key]}")
    if payload.get("outside_hours"):
        lines.append("It arrived outside business hours; the customer was told when the team is back.")
    lines += ["", f"Open it in the console: {payload.get('url', '')}"]
    message.set_content("\n".join(lines) + "\n")
    return message


class AlertSender:
    """Sends the queued deliveries: at once when poked, else every `alert_poll_s`; retries with back-off."""

    def __init__(self, engine: Engine, settings: Settings, desk: Desk | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.desk = desk
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        if desk is not None:
            desk.on_queued = self.poke

    def poke(self) -> None:
        """Thread-safe: deliveries were queued, send them now."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def send_email(self, delivery: AlertDelivery) -> None:
        settings = self.settings
        if not settings.smtp_host:
            raise RuntimeError("no SMTP server is set (SUPPORTBOT_SMTP_HOST)")
        message = compose_email(delivery, settings)
        timeout = settings.webhook_timeout_s
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if settings.smtp_security == "tls":
            smtp = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
        with smtp:
            if settings.smtp_security == "starttls":
                smtp.starttls(context=context)
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password or "")
            smtp.send_message(message)

    def send_webhook(self, session: Session, delivery: AlertDelivery) -> None:
        webhook = crud.get_webhook(session=session, webhook_id=int(delivery.target))
        body = json.dumps({**delivery.payload, "delivery_id": delivery.id, "attempt": delivery.attempts + 1}).encode()
        headers = {
            "Content-Type": "application/json", "User-Agent": "supportbot-webhooks", EVENT_HEADER: delivery.event,
            DELIVERY_HEADER: str(delivery.id), SIGNATURE_HEADER: sign(webhook.secret, body),
        }  # fmt: skip
        response = httpx.post(webhook.url, content=body, headers=headers, timeout=self.settings.webhook_timeout_s)
        if not response.is_success:
            raise RuntimeError(f"HTTP {response.status_code} from the webhook")

    def send_due(self) -> int:
        """Try every delivery that is due now; returns how many went out."""
        sent = 0
        with Session(self.engine) as session:
            # One at a time, each claimed just before it is tried: a hold taken for a whole batch could run out
            # while the batch's first deliveries time out, and another replica would send the rest a second time.
            for _ in range(BATCH):
                claimed = crud.claim_due_deliveries(session=session, hold_for=HOLD, limit=1)
                if not claimed:
                    break
                delivery = claimed[0]
                assert delivery.id is not None
                error, attempts = None, self.settings.alert_retry_attempts
                try:
                    if delivery.kind == "email":
                        self.send_email(delivery)
                    else:
                        self.send_webhook(session, delivery)
                except crud.WebhookNotFound:
                    error, attempts = "the webhook was deleted", 1
                except (OSError, smtplib.SMTPException, httpx.HTTPError, RuntimeError) as failure:
                    error = f"{type(failure).__name__}: {failure}"
                done = crud.finish_delivery(
                    session=session, delivery_id=delivery.id, error=error, max_attempts=attempts,
                    retry_base_s=self.settings.alert_retry_base_s,
                )  # fmt: skip
                if error is None:
                    sent += 1
                else:
                    logger.warning(
                        "alert %d (%s to %s) attempt %d failed: %s", delivery.id, delivery.kind, delivery.target,
                        done.attempts, error,
                    )  # fmt: skip
        return sent

    def _sleep_s(self) -> float:
        with Session(self.engine) as session:
            due = crud.next_delivery_due(session=session)
        poll = self.settings.alert_poll_s
        if due is None:
            return poll
        return min(poll, max((_aware(due) - utcnow()).total_seconds(), 0.05))

    async def run(self) -> None:
        """Send, reassign and sleep until the next delivery is due, a new one is queued, or the poll interval ends.
        Pending deliveries are in the database, so those queued before a restart go out after it."""
        self._loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            try:
                if self.desk is not None:
                    await run_in_threadpool(self.desk.reassign_unanswered)
                await run_in_threadpool(self.send_due)
                sleep_s = await run_in_threadpool(self._sleep_s)
            except Exception:  # noqa: BLE001 - the loop must keep running; the next pass tries again
                logger.exception("sending alerts failed")
                sleep_s = self.settings.alert_poll_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), sleep_s)
