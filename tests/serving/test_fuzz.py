"""Fuzzing the whole API with Schemathesis: every operation of the OpenAPI schema, called anonymously, as a
customer, as staff and as an admin, with valid and invalid generated data, against a real uvicorn server.
No answer may be a server error or differ from what the schema documents (status, content type, body).

The budget is bounded (`EXAMPLES` per operation and credential); run with `-s` for the case counts.
"""

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session

from conversations import crud
from conversations.db import init_db, make_engine
from conversations.models import Role, StaffRole
from core.settings import Settings
from serving.app import create_app
from serving.routes import events
from tests.conftest import stand_in_settings_at
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.server import running_app
from tests.utils.staff import make_staff, sign_in

# Generated cases per operation and credential (4 credentials x 37 operations): about two minutes on 2 cores.
EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
TALLY: Counter = Counter()


@dataclass
class World:
    """The running app and the things credentials open in it."""

    url: str
    engine: Engine
    conversation_id: str
    token: str
    bot_message: int
    staff_id: int
    admin_id: int


@pytest.fixture(scope="module")
def world(stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path_factory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("fuzz")
    app_settings: Settings = stand_in_settings_at(
        folder, stand_in_vllm, base_model_dir,
        training_runner="queue", rate_limit_per_minute_conversation=100_000, rate_limit_per_minute_address=100_000,
        event_streams_per_minute_conversation=100_000, sign_in_failures_per_email=100_000,
        sign_in_failures_per_address=100_000, sign_in_failures=100_000, new_conversations_per_minute=100_000,
    )  # fmt: skip
    engine = make_engine(app_settings.resolved_database_url)
    init_db(engine)
    staff = make_staff(engine, "sam@example.com", "Sam Staff")
    admin = make_staff(engine, "ada@example.com", "Ada Admin", StaffRole.admin)
    with Session(engine) as session:
        conversation, token = crud.create_conversation(session=session, channel="web")
        crud.add_message(session=session, conversation_id=conversation.id, role=Role.customer, text="Where is it?")
        reply = crud.add_message(session=session, conversation_id=conversation.id, role=Role.bot, text="On its way.")
        conversation_id, bot_message = conversation.id, reply.id
    saved_max_stream = events.MAX_STREAM_S
    events.MAX_STREAM_S = 0.5  # an event stream ends quickly, so a fuzzed stream does not hold the run
    try:
        with running_app(app_settings) as url:
            yield World(url, engine, conversation_id, token, bot_message, staff.id, admin.id)
    finally:
        events.MAX_STREAM_S = saved_max_stream
        print(f"\nfuzzing: {sum(TALLY.values())} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(TALLY.items())))


# The schema the app serves at /openapi.json (local mode), read without starting it: one test per operation.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


def aim_at_real_records(case, world: World) -> None:
    """Valid cases name the conversation and reply that exist (random ids only ever find nothing)."""
    meta = case.meta
    if meta is not None and meta.generation.mode.is_negative:
        return
    if "conversation_id" in case.path_parameters:
        case.path_parameters["conversation_id"] = world.conversation_id
    if "message_id" in case.path_parameters and random.random() < 0.5:
        case.path_parameters["message_id"] = world.bot_message


def staff_credentials(world: World, staff_id: int) -> tuple[dict, dict]:
    """A fresh session per case: a fuzzed sign-out or account change must not end the rest of the run."""
    with Session(world.engine) as session:
        crud.update_staff(session=session, staff_id=staff_id, active=True,
                          role=StaffRole.admin if staff_id == world.admin_id else StaffRole.staff)  # fmt: skip
    signed = sign_in(world.engine, staff_id)
    return signed.headers, signed.cookies


def call(case, world: World, credential: str) -> None:
    headers: dict[str, str] = {}
    cookies: dict[str, str] = {}
    if credential == "customer":
        aim_at_real_records(case, world)
        headers = {"Authorization": f"Bearer {world.token}"}
    elif credential in ("staff", "admin"):
        aim_at_real_records(case, world)
        headers, cookies = staff_credentials(world, world.staff_id if credential == "staff" else world.admin_id)
    session = requests.Session()
    session.cookies.update(cookies)
    try:
        response = case.call_and_validate(base_url=world.url, session=session, headers=headers, checks=CHECKS,
                                          timeout=30)  # fmt: skip
    except Exception:
        TALLY[f"{credential} failed"] += 1
        raise
    TALLY[f"{credential} {response.status_code // 100}xx"] += 1


FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@schema.parametrize()
@FUZZ
def test_anonymous(case, world: World) -> None:
    call(case, world, "anonymous")


@schema.parametrize()
@FUZZ
def test_customer(case, world: World) -> None:
    call(case, world, "customer")


@schema.parametrize()
@FUZZ
def test_staff(case, world: World) -> None:
    call(case, world, "staff")


@schema.parametrize()
@FUZZ
def test_admin(case, world: World) -> None:
    call(case, world, "admin")
