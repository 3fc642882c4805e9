"""Actions: the bot calls the company's own systems (an order API) and answers from what they return.

The pack's actions.yaml declares each action; the dialogue manager picks one from the intent and the slots (the
model never chooses), the customer proves who they are, and the reply is a fixed template over allowed fields.
"""

import asyncio
import logging
import re
import string
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.domain import DomainPack, DomainPackError, Slug, Text, _load_entries, _require_unique
from bot.routing import Decision, DialogueState, Route
from bot.slots import mask

logger = logging.getLogger(__name__)

ACTIONS_FILE = "actions.yaml"
# A header value names a secret as {secret:NAME}; its value comes from the settings, never from the pack.
_SECRET = re.compile(r"\{secret:([A-Za-z0-9_-]+)\}")
BASE_URL = "base_url"

NOT_FOUND_REPLY = (
    "I couldn't find an order with that order number and e-mail address. Please check both: the e-mail must be the "
    "one you used when ordering."
)
TOO_MANY_TRIES_REPLY = "I can't look up orders in this conversation after several unsuccessful tries. "
UNAVAILABLE_REPLY = "Sorry, I can't reach our order system right now, so I can't check order {reference} myself. "
UNEXPECTED_REPLY = "Sorry, our order system gave me an answer I can't read, so I won't guess about order {reference}. "
CONFIRM_QUESTION = " Shall I go ahead? Please answer yes or no."
DECLINED_REPLY = "All right, I haven't changed anything."
# A clear yes or no to "Shall I go ahead?": the whole message, give or take courtesy. Anything else changes nothing.
_YES = re.compile(
    r"(?:yes|yeah|yep|yup|sure|ok|okay|confirm(?:ed)?|i confirm|go ahead|please do|do it|please go ahead)"
    r"(?:[\s,.!]+(?:yes|please|go ahead|do it|thanks|thank you|confirm(?:ed)?|sure|that's right))*[\s.!]*",
    re.IGNORECASE,
)
_NO = re.compile(
    r"(?:no|nope|nah|don'?t|do not|stop|never ?mind|cancel that|leave it|keep it)"
    r"(?:[\s,.!]+(?:no|thanks|thank you|don'?t|please|leave it|keep it|never ?mind))*[\s.!]*",
    re.IGNORECASE,
)


class ActionInput(BaseModel):
    """One input of an action, read from a slot of the conversation."""

    model_config = ConfigDict(extra="forbid")

    slot: Slug
    ask: Text
    """The question that asks the customer for it."""
    personal: bool = False
    """Masked in the trace (an e-mail, a phone number)."""


class HttpCall(BaseModel):
    """The request an action makes: {input} and {base_url} in the URL, {secret:NAME} in header values."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    url: Text
    headers: dict[str, Text] = {}
    body: dict[str, Text] | None = None
    """A JSON object sent with the call, its values templates over the inputs ("{email}")."""
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 3.0


class Verify(BaseModel):
    """Identity: the result's `field` must equal the customer's `input` (case-insensitive) before anything is shown."""

    model_config = ConfigDict(extra="forbid")

    field: Slug
    input: Slug


class Reply(BaseModel):
    """The answer: one template per value of the result's `by` field; placeholders are allowed result fields."""

    model_config = ConfigDict(extra="forbid")

    by: Slug
    templates: Annotated[dict[str, Text], Field(min_length=1)]


class Action(BaseModel):
    """A call to the company's systems that the dialogue manager makes for some intents."""

    model_config = ConfigDict(extra="forbid")

    name: Slug
    description: Text
    intents: Annotated[list[Slug], Field(min_length=1)]
    inputs: Annotated[dict[str, ActionInput], Field(min_length=1)]
    request: HttpCall
    verify: Verify | None = None
    result_fields: Annotated[list[Slug], Field(min_length=1)]
    reply: Reply
    changes: bool
    confirm: Text | None = None
    """For an action that changes something: exactly what it will do, over the inputs; the customer must say yes."""
    refused: Text | None = None
    """The reply when the system refuses the change (HTTP 409), over the inputs and {reason}, the system's words."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        placeholders = {name for _, name, _, _ in string.Formatter().parse(self.request.url) if name}
        unknown = placeholders - set(self.inputs) - {BASE_URL}
        if unknown:
            raise ValueError(f"request.url uses {sorted(unknown)}, which are not inputs (known: {sorted(self.inputs)})")
        if self.verify is not None and self.verify.input not in self.inputs:
            raise ValueError(f"verify.input {self.verify.input!r} is not an input (known: {sorted(self.inputs)})")
        if self.reply.by not in self.result_fields:
            raise ValueError(f"reply.by {self.reply.by!r} is not in result_fields")
        for value, template in self.reply.templates.items():
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
            if fields - set(self.result_fields):
                raise ValueError(
                    f"reply template {value!r} uses {sorted(fields - set(self.result_fields))}, "
                    "which are not in result_fields"
                )
        for name, template in (("request.body", " ".join((self.request.body or {}).values())),
                               ("confirm", self.confirm or "")):  # fmt: skip
            unknown = {name for _, name, _, _ in string.Formatter().parse(template) if name} - set(self.inputs)
            if unknown:
                raise ValueError(f"{name} uses {sorted(unknown)}, which are not inputs (known: {sorted(self.inputs)})")
        if self.refused is not None:
            fields = {name for _, name, _, _ in string.Formatter().parse(self.refused) if name}
            if fields - set(self.inputs) - {"reason"}:
                raise ValueError(f"refused uses {sorted(fields - set(self.inputs) - {'reason'})}, not inputs or reason")
        if self.changes and (self.confirm is None or self.refused is None or self.request.method == "GET"):
            raise ValueError(
                "an action that changes something (changes: true) needs `confirm` (what it will do, asked before), "
                "`refused` (the reply when the system says no) and a method other than GET"
            )
        if not self.changes and self.confirm is not None:
            raise ValueError("`confirm` is only for actions that change something (changes: true)")
        return self

    def secrets(self) -> set[str]:
        return {name for value in self.request.headers.values() for name in _SECRET.findall(value)}


def load_actions(pack: DomainPack) -> list[Action]:
    """The pack's actions.yaml, validated against its intents; no file means no actions. Raises DomainPackError."""
    path = pack.path / ACTIONS_FILE
    if not path.exists():
        return []
    entries = _load_entries(path, Action, "name")
    _require_unique(path, [(line, action.name) for line, action in entries], "action name")
    known = {intent.name for intent in pack.intents}
    claimed: dict[str, str] = {}
    for line, action in entries:
        for intent in action.intents:
            if intent not in known:
                raise DomainPackError(
                    f"{path}:{line}: action {action.name!r} refers to unknown intent {intent!r} "
                    f"(known: {', '.join(sorted(known))})"
                )
            if intent in claimed:
                raise DomainPackError(f"{path}:{line}: intent {intent!r} already uses action {claimed[intent]!r}")
            claimed[intent] = action.name
    return [action for _, action in entries]


def confirmation(text: str) -> bool | None:
    """True for a clear yes, False for a clear no, None for anything else (which confirms nothing)."""
    said = text.strip()
    if _YES.fullmatch(said):
        return True
    if _NO.fullmatch(said):
        return False
    return None


class Outcome(StrEnum):
    """How an action call ended, as recorded in the trace and counted by the benchmark."""

    ok = "ok"
    refused = "refused"  # the system said no to a change (409) and why: the customer is told its reason
    declined = "declined"  # the customer said no when asked to confirm a change: nothing was called
    not_found = "not found"  # no such order, or the e-mail does not match it: the customer is told the same
    unavailable = "unavailable"  # connection refused, timeout, 5xx
    rejected = "rejected"  # 4xx other than 404: the call itself is wrong (key, input)
    unexpected = "unexpected result"  # not the JSON the action declares


@dataclass
class Handled:
    """The bot's side of a turn that an action decided: the reply, the route and state after it, the trace."""

    route: Route
    state: DialogueState
    reply: str
    trace: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)  # the allowed result fields the reply was built from


class ActionRunner:
    """Runs the pack's actions for the dialogue manager: asks for inputs, calls, verifies identity, answers."""

    def __init__(
        self,
        actions: list[Action],
        *,
        base_url: str,
        secrets: Mapping[str, str],
        handoff_message: str,
        max_identity_failures: int = 3,
    ) -> None:
        for action in actions:
            missing = action.secrets() - set(secrets)
            if missing:
                raise DomainPackError(
                    f"{ACTIONS_FILE}: action {action.name!r} needs secret(s) {sorted(missing)} in its headers; "
                    "set them in SUPPORTBOT_ACTION_SECRETS (a JSON object of name to value)"
                )
        self.by_intent = {intent: action for action in actions for intent in action.intents}
        self.by_name = {action.name: action for action in actions}
        self.base_url = base_url.rstrip("/")
        self.secrets = dict(secrets)
        self.handoff_message = handoff_message
        self.max_identity_failures = max_identity_failures

    def applies(self, route: Route, state: DialogueState) -> Action | None:
        """The action to run for this turn: its intent needs one and the customer named something it looks up."""
        if route.decision is not Decision.answer or route.intent not in self.by_intent:
            return None
        action = self.by_intent[route.intent]
        # A general question ("How do I track an order?") with nothing to look up is answered from the help content.
        return action if any(spec.slot in state.slots for spec in action.inputs.values()) else None

    async def handle(
        self, route: Route, state: DialogueState, before: DialogueState | None = None, text: str = ""
    ) -> Handled | None:
        """Run the action this turn needs, or None when it needs none.

        `state` is the state after the turn's details were read, `before` the one the turn started from, `text`
        the customer's message (a yes or no to a change the bot asked to confirm)."""
        pending = before.pending_action if before is not None else None
        if pending and route.decision is not Decision.silent and pending.get("name") in self.by_name:
            answer = confirmation(text)
            if answer is not None:
                # A plain yes or no is an answer, never a sign of a customer wanting a person (a curt "no").
                answering = replace(state, status=before.status, misses=0, negative_streak=0)  # type: ignore[union-attr]
                return await self._confirmed(answering, self.by_name[pending["name"]], pending, answer)
            # Anything but a clear yes or no changes nothing: the message is handled as it is.
        action = self.applies(route, state)
        if action is None:
            return None
        if before is not None and before.pending_intent == route.intent:
            slots = {spec.slot for spec in action.inputs.values()}
            if not any(state.slots.get(slot) != before.slots.get(slot) for slot in slots):
                # Asked for a detail last turn, and the customer wrote about something else ("ok thanks", another
                # question): answer that, rather than asking again or repeating a refused look-up.
                return None
        known, signed = self._known(action, state)
        missing = [name for name, spec in action.inputs.items() if spec.slot not in known]
        if missing:
            spec = action.inputs[missing[0]]
            asking = replace(state, pending_intent=route.intent)
            reason = f"action {action.name} needs " + ", ".join(missing)
            return Handled(Route(Decision.ask_details, route.intent, reason, tuple(missing)), asking, spec.ask)
        inputs = {name: known[spec.slot] for name, spec in action.inputs.items()}
        if action.changes:
            # Say exactly what will be done and wait for a yes; the key makes the one call this yes allows.
            assert action.confirm is not None
            waiting = {"name": action.name, "inputs": inputs, "key": uuid.uuid4().hex, "signed": signed}
            asking = replace(state, pending_intent=None, pending_action=waiting)
            reason = f"action {action.name} needs confirmation"
            reply = action.confirm.format(**inputs) + CONFIRM_QUESTION
            return Handled(Route(Decision.ask_details, route.intent, reason, ("confirmation",)), asking, reply)
        return await self._run(route, state, action, inputs, signed)

    async def _confirmed(self, state: DialogueState, action: Action, pending: dict, answer: bool) -> Handled:
        route = Route(Decision.answer, action.intents[0], f"action {action.name}: confirmed" if answer else "")
        inputs = dict(pending["inputs"])
        if answer:
            return await self._run(route, state, action, inputs, bool(pending.get("signed")), key=pending["key"])
        trace = {"name": action.name, "inputs": self._shown(action, inputs), "changes": True, "confirmed": False,
                 "outcome": Outcome.declined.value, "attempts": 0, "ms": 0.0}  # fmt: skip
        done = replace(state, pending_intent=None, pending_action=None)
        declined = Route(Decision.answer, action.intents[0], f"action {action.name}: declined by the customer")
        return Handled(declined, done, DECLINED_REPLY, trace)

    @staticmethod
    def _shown(action: Action, inputs: Mapping[str, str]) -> dict[str, str]:
        return {name: mask(value) if action.inputs[name].personal else value for name, value in inputs.items()}

    async def _run(
        self, route: Route, state: DialogueState, action: Action, inputs: dict[str, str], signed: bool,
        key: str | None = None,
    ) -> Handled:  # fmt: skip
        """Call the action with its inputs (a change: once, under `key`) and answer from the result."""
        state = replace(state, pending_action=None)
        reference = next(iter(inputs.values()))
        trace: dict[str, Any] = {
            "name": action.name, "inputs": self._shown(action, inputs), "identity": "signed" if signed else "given"
        }  # fmt: skip
        if action.changes:
            trace.update(changes=True, confirmed=True, idempotency_key=key)
        if state.identity_failures >= self.max_identity_failures:
            trace.update(outcome="refused: too many unsuccessful tries", attempts=0, ms=0.0)
            return self._handoff(route, state, TOO_MANY_TRIES_REPLY, trace, "too many unsuccessful lookups")

        started = time.perf_counter()
        outcome, status_code, attempts, data = await self._call(action, inputs, key)
        trace.update(attempts=attempts, status_code=status_code, ms=round((time.perf_counter() - started) * 1000, 1))
        facts: dict[str, str] = {}
        if outcome is Outcome.ok:
            outcome, facts = self._read(action, inputs, data)
        trace["outcome"] = outcome.value
        if outcome is Outcome.ok:
            template = action.reply.templates[facts[action.reply.by]]
            done = replace(state, pending_intent=None)
            reply = template.format(**facts)
            trace["fields"] = sorted(facts)
            return Handled(Route(Decision.answer, route.intent, f"action {action.name}"), done, reply, trace, facts)
        if outcome is Outcome.refused:
            # The system's own reason, word for word: the bot does not guess why a change was not made.
            assert action.refused is not None
            trace["reason"] = data
            done = replace(state, pending_intent=None)
            reply = action.refused.format(**inputs, reason=data)
            return Handled(Route(Decision.answer, route.intent, f"action {action.name}: refused"), done, reply, trace)
        if outcome is Outcome.not_found:
            failures = state.identity_failures + 1
            trace["identity_failures"] = failures
            if failures >= self.max_identity_failures:
                failed = replace(state, identity_failures=failures)
                return self._handoff(route, failed, TOO_MANY_TRIES_REPLY, trace, "too many unsuccessful lookups")
            # The customer may correct either detail next; the next message continues this request.
            retry = replace(state, identity_failures=failures, pending_intent=route.intent)
            return Handled(Route(Decision.answer, route.intent, f"action {action.name}: not found"), retry,
                           NOT_FOUND_REPLY, trace)  # fmt: skip
        apology = (UNEXPECTED_REPLY if outcome is Outcome.unexpected else UNAVAILABLE_REPLY).format(reference=reference)
        return self._handoff(route, state, apology, trace, f"action {action.name} failed: {outcome.value}")

    @staticmethod
    def _known(action: Action, state: DialogueState) -> tuple[dict[str, str], bool]:
        """The slots the action can use, and whether its identity input comes from the site's signed identity.

        A customer the embedding site vouched for need not type their e-mail; one they type themselves is
        checked against the order like any other (it may be for someone else's order they hold)."""
        known = dict(state.slots)
        slot = action.inputs[action.verify.input].slot if action.verify is not None else None
        signed = slot is not None and slot not in known and state.verified_email is not None
        if signed:
            known[slot] = state.verified_email  # type: ignore[index,assignment]
        return known, signed

    def _handoff(self, route: Route, state: DialogueState, apology: str, trace: dict, reason: str) -> Handled:
        handed = replace(state, status="pending_human", misses=0, negative_streak=0, pending_intent=None)
        return Handled(Route(Decision.handoff, route.intent, reason), handed, apology + self.handoff_message, trace)

    async def _call(
        self, action: Action, inputs: Mapping[str, str], key: str | None = None
    ) -> tuple[Outcome, int | None, int, Any]:
        """(outcome, HTTP status, attempts, parsed JSON or the refusal's reason); one retry on a failed idempotent
        call, which a change sent under its Idempotency-Key `key` is."""
        call = action.request
        quoted = {name: urllib.parse.quote(value, safe="") for name, value in inputs.items()}
        url = call.url.format(**quoted, **{BASE_URL: self.base_url})
        headers = {name: _SECRET.sub(lambda m: self.secrets[m.group(1)], value) for name, value in call.headers.items()}
        if key is not None:
            headers["Idempotency-Key"] = key
        body = {name: value.format(**inputs) for name, value in call.body.items()} if call.body is not None else None
        tries = 2 if call.method in ("GET", "PUT", "DELETE") or key is not None else 1
        status: int | None = None
        outcome = Outcome.unavailable
        async with httpx.AsyncClient(timeout=call.timeout_s) as client:
            for attempt in range(1, tries + 1):
                try:
                    response = await asyncio.wait_for(
                        client.request(call.method, url, headers=headers, json=body), timeout=call.timeout_s
                    )
                except (httpx.HTTPError, TimeoutError) as error:
                    logger.warning("action %s: attempt %d failed: %r", action.name, attempt, error)
                    outcome, status = Outcome.unavailable, None
                    continue
                status = response.status_code
                if status == 404:
                    return Outcome.not_found, status, attempt, None
                if status == 409 and action.changes:
                    reason = _reason(response)
                    if reason is not None:
                        return Outcome.refused, status, attempt, reason
                if 400 <= status < 500:
                    logger.warning("action %s: rejected with HTTP %d", action.name, status)
                    return Outcome.rejected, status, attempt, None
                if status >= 500:
                    logger.warning("action %s: attempt %d got HTTP %d", action.name, attempt, status)
                    outcome = Outcome.unavailable
                    continue
                try:
                    return Outcome.ok, status, attempt, response.json()
                except ValueError:
                    return Outcome.unexpected, status, attempt, None
        return outcome, status, tries, None

    @staticmethod
    def _read(action: Action, inputs: Mapping[str, str], data: Any) -> tuple[Outcome, dict[str, str]]:
        """Verify identity and keep only the allowed fields the reply needs; anything off is `unexpected`."""
        if not isinstance(data, dict):
            return Outcome.unexpected, {}
        if action.verify is not None:
            expected = data.get(action.verify.field)
            if not isinstance(expected, str):
                return Outcome.unexpected, {}
            if expected.strip().casefold() != inputs[action.verify.input].strip().casefold():
                return Outcome.not_found, {}
        key = data.get(action.reply.by)
        if not isinstance(key, str) or key not in action.reply.templates:
            return Outcome.unexpected, {}
        template = action.reply.templates[key]
        needed = {name for _, name, _, _ in string.Formatter().parse(template) if name} | {action.reply.by}
        facts = {}
        for name in needed:
            value = data.get(name)
            if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value).strip():
                return Outcome.unexpected, {}
            facts[name] = str(value)
        return Outcome.ok, facts


def _reason(response: httpx.Response) -> str | None:
    """The system's reason for refusing a change ({"detail": "..."}), as one short line; None when it gave none."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return None
    if not isinstance(detail, str) or not detail.strip():
        return None
    return " ".join(detail.split())[:300]
