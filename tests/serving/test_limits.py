"""Rate limits: a wrong token spends nothing, conversation opening, sending, event streams and sign-in are
limited per address, per conversation and for everyone, counts are shared by replicas through the database,
and concurrent sign-in guesses never get past the limit. X-Forwarded-For counts only from trusted proxies."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from conversations import crud
from conversations.db import init_db, make_engine
from conversations.models import Conversation, Message, Role, StaffRole
from core.settings import Settings
from serving.app import create_app
from serving.limits import Limit, RateLimited, RateLimiter
from tests.conftest import stand_in_settings_at
from tests.utils.api import assert_error
from tests.utils.conversation import open_conversation, send
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.server import running_app
from tests.utils.staff import PASSWORD, make_staff


@pytest.fixture
def settings_for(stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path: Path):
    def make(**overrides: object) -> Settings:
        return stand_in_settings_at(tmp_path, stand_in_vllm, base_model_dir, **overrides)

    return make


def count(settings: Settings, table: type) -> int:
    with Session(make_engine(settings.resolved_database_url)) as session:
        return session.exec(select(func.count()).select_from(table)).one()


def test_a_wrong_token_spends_nothing_of_the_owners_limit(settings_for) -> None:
    settings = settings_for(rate_limit_per_minute_conversation=2, event_streams_per_minute_conversation=1)
    with TestClient(create_app(settings)) as client:
        conversation_id, headers = open_conversation(client)
        stranger = {"Authorization": "Bearer guessed-token"}
        for _ in range(5):
            refused = client.post(
                f"/api/conversations/{conversation_id}/messages", json={"text": "x"}, headers=stranger
            )
            assert_error(refused, 403, "invalid_token")
            assert_error(client.get(f"/api/conversations/{conversation_id}/events", headers=stranger), 403,
                         "invalid_token")  # fmt: skip
        for text in ("first", "second"):
            assert send(client, conversation_id, headers, text)[0][1]["text"] == text
        with client.stream("GET", f"/api/conversations/{conversation_id}/events?after=0", headers=headers) as stream:
            assert stream.status_code == 200
        third = client.post(f"/api/conversations/{conversation_id}/messages", json={"text": "third"}, headers=headers)
        assert_error(third, 429, "rate_limited")
        assert "conversation" in third.json()["error"]["message"] and 1 <= int(third.headers["Retry-After"]) <= 60


def test_opening_conversations_is_limited_per_address_and_a_refusal_creates_nothing(settings_for) -> None:
    settings = settings_for(new_conversations_per_minute_address=3)
    with TestClient(create_app(settings)) as client:
        for _ in range(3):
            open_conversation(client)
        refused = client.post("/api/conversations", json={"channel": "web"})
        assert_error(refused, 429, "rate_limited")
        assert "new conversations" in refused.json()["error"]["message"] and int(refused.headers["Retry-After"]) >= 1
        assert count(settings, Conversation) == 3


def test_event_streams_per_conversation_are_limited(settings_for) -> None:
    settings = settings_for(event_streams_per_minute_conversation=2)
    with TestClient(create_app(settings)) as client:
        conversation_id, headers = open_conversation(client)
        other_id, other_headers = open_conversation(client)
        for _ in range(2):
            with client.stream("GET", f"/api/conversations/{conversation_id}/events", headers=headers) as stream:
                assert stream.status_code == 200
        assert_error(client.get(f"/api/conversations/{conversation_id}/events", headers=headers), 429, "rate_limited")
        with client.stream("GET", f"/api/conversations/{other_id}/events", headers=other_headers) as stream:
            assert stream.status_code == 200, "another conversation keeps its own limit"


def test_replicas_share_the_limits_through_the_database(stand_in_vllm, base_model_dir, tmp_path, postgres_url) -> None:
    settings = Settings(
        data_dir=tmp_path, base_model=base_model_dir, database_url=postgres_url, vllm_urls=[stand_in_vllm.url],
        rate_limit_per_minute_address=3,
    )  # fmt: skip
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        conversation_id, headers = open_conversation(first)
        send(first, conversation_id, headers, "one")
        send(second, conversation_id, headers, "two")
        send(first, conversation_id, headers, "three")
        for replica in (first, second):
            refused = replica.post(f"/api/conversations/{conversation_id}/messages", json={"text": "four"},
                                   headers=headers)  # fmt: skip
            assert_error(refused, 429, "rate_limited")
            assert "network address" in refused.json()["error"]["message"]
    with Session(make_engine(postgres_url)) as session:
        texts = session.exec(select(Message.text).where(Message.role == Role.customer).order_by(Message.id)).all()
    assert texts == ["one", "two", "three"]


def test_the_window_slides_and_refused_hits_do_not_count(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'limits.db'}")
    init_db(engine)
    now = [6000.0]  # the start of a minute
    limiter = RateLimiter(engine, {"send": Limit("send", 2, 60, "Too many.")}, clock=lambda: now[0])
    limiter.admit(send="c")
    now[0] += 20
    limiter.admit(send="c")
    for _ in range(5):  # customers who retry too early are told again, not locked out longer
        with pytest.raises(RateLimited) as refused:
            limiter.admit(send="c")
        assert refused.value.retry_after_s == pytest.approx(40.0)
    limiter.admit(send="other")  # other keys are not affected
    now[0] += 40  # the next minute: both hits still weigh fully at its start
    with pytest.raises(RateLimited):
        limiter.admit(send="c")
    now[0] += 30  # half the previous minute has slid out: one of its two hits still counts
    limiter.admit(send="c")
    with pytest.raises(RateLimited):
        limiter.admit(send="c")


def test_a_refusal_by_one_limit_gives_back_the_hits_of_the_others(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'limits.db'}")
    init_db(engine)
    limits = {"a": Limit("a", 5, 60, "a"), "b": Limit("b", 1, 60, "b")}
    limiter = RateLimiter(engine, limits, clock=lambda: 6000.0)
    limiter.admit(a="x", b="y")
    for _ in range(10):
        with pytest.raises(RateLimited, match="b"):
            limiter.admit(a="x", b="y")
    for _ in range(4):  # "a" counted only the admitted hit
        limiter.admit(a="x")
    with pytest.raises(RateLimited, match="a"):
        limiter.admit(a="x")


@pytest.fixture
def staff_app(settings_for) -> Iterator[tuple[str, str]]:
    settings = settings_for(sign_in_failures_per_email=10)
    engine = make_engine(settings.resolved_database_url)
    init_db(engine)
    staff = make_staff(engine, "dana@example.com", "Dana", StaffRole.staff)
    with running_app(settings) as url:
        yield url, staff.email


def test_concurrent_wrong_passwords_never_pass_the_limit(staff_app: tuple[str, str]) -> None:
    url, email = staff_app

    def guess(attempt: int) -> int:
        with httpx.Client(base_url=url, timeout=60) as http:
            return http.post("/api/staff/session", json={"email": email, "password": f"guess-{attempt}"}).status_code

    with ThreadPoolExecutor(max_workers=13) as pool:
        statuses = sorted(pool.map(guess, range(13)))
    assert statuses == [401] * 10 + [429] * 3
    with httpx.Client(base_url=url, timeout=60) as http:
        # Even the right password waits until the window has passed.
        assert http.post("/api/staff/session", json={"email": email, "password": PASSWORD}).status_code == 429


def test_right_passwords_do_not_count_as_failures(staff_app: tuple[str, str]) -> None:
    url, email = staff_app
    with httpx.Client(base_url=url, timeout=60) as http:
        for _ in range(9):
            assert http.post("/api/staff/session", json={"email": email, "password": "wrong"}).status_code == 401
        for _ in range(3):
            assert http.post("/api/staff/session", json={"email": email, "password": PASSWORD}).status_code == 200
        assert http.post("/api/staff/session", json={"email": email, "password": "wrong"}).status_code == 401
        assert http.post("/api/staff/session", json={"email": email, "password": PASSWORD}).status_code == 429


@pytest.mark.parametrize(("trusted", "separate"), [(["127.0.0.1"], True), (["10.0.0.0/8"], False)],
                         ids=["proxy-trusted", "proxy-not-trusted"])  # fmt: skip
def test_x_forwarded_for_counts_only_from_a_trusted_proxy(settings_for, trusted, separate) -> None:
    settings = settings_for(new_conversations_per_minute_address=1, trusted_proxies=trusted)
    with running_app(settings) as url, httpx.Client(base_url=url, timeout=60) as http:
        first = http.post("/api/conversations", json={}, headers={"X-Forwarded-For": "203.0.113.7"})
        assert first.status_code == 201
        # A client behind the proxy, or one pretending to be: another forwarded address.
        second = http.post("/api/conversations", json={}, headers={"X-Forwarded-For": "198.51.100.9"})
        assert second.status_code == (201 if separate else 429), second.text
        # The rightmost untrusted entry counts: a client cannot pick its address by prepending one.
        spoofed = http.post("/api/conversations", json={}, headers={"X-Forwarded-For": "192.0.2.1, 203.0.113.7"})
        assert spoofed.status_code == 429


def test_a_mistyped_trusted_proxy_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
        Settings(trusted_proxies=["docker-bridge"])


def test_stale_counts_are_forgotten(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'limits.db'}")
    init_db(engine)
    with Session(engine) as session:
        for minute in range(5):
            crud.take_hit(session=session, key="k", limit=10, window_s=60, now=60.0 * minute)
        assert crud.forget_counts(session=session, before=180.0) == 3
