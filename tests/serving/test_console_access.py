"""Who may call what: every console page, staff and admin API route and customer route, tried with no
credentials, a customer's token, a staff session and an admin session; only the right role gets through.

The app runs in-process on a fresh database with no model server: access is decided before any reply.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import Response
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlmodel import Session

from conversations import crud
from conversations.models import ConversationStatus, StaffRole, utcnow
from core.settings import Settings
from serving.app import create_app
from serving.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, sign_in
from tests.utils.ports import free_port
from tests.utils.staff import PASSWORD, Staff, make_staff, seed_conversation
from tests.utils.staff import sign_in as new_session

ROLES = ("public", "customer", "staff", "admin")
CREDENTIALS = ("nobody", "customer", "staff", "admin")
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
PUBLIC = {
    ("GET", "/console/login"),
    ("POST", "/console/login"),
    ("POST", "/api/staff/session"),
    ("POST", "/api/conversations"),
    ("GET", "/api/widget/config"),
}
ADMIN_PREFIXES = (
    "/console/staff", "/console/audit", "/console/models", "/console/knowledge", "/api/staff/accounts",
    "/api/staff/audit", "/api/admin/", "/console/alerts", "/api/staff/webhooks", "/api/staff/alerts",
    "/console/customers", "/api/staff/customers",
)  # fmt: skip
# Staff routes under an admin prefix: a teammate sets their own duty (the matrix aims it at the staff account).
STAFF_EXCEPTIONS = {("PUT", "/api/staff/accounts/{staff_id}/duty")}
# Path parameters that point at nothing, so an admin call that gets through changes nothing.
HARMLESS = {
    "run_id": "999999", "name": "no-such-thing", "slug": "no-such-article", "canned_id": "999999",
    "webhook_id": "999999", "question_id": "999999",
}  # fmt: skip


def required_role(method: str, path: str) -> str:
    """The least role a route needs; routes under /api and /console must be listed here to pass."""
    if (method, path) in PUBLIC:
        return "public"
    if path.startswith("/api/conversations/"):
        return "customer"
    if (method, path) in STAFF_EXCEPTIONS:
        return "staff"
    if path.startswith(ADMIN_PREFIXES):
        return "admin"
    if path == "/console" or path.startswith(("/console/", "/api/staff/")):
        return "staff"
    if path.startswith("/api/"):
        raise AssertionError(f"{method} {path} is not in the access matrix: say which role it needs")
    return "public"


def gets_through(role: str, credential: str) -> bool:
    if role == "public":
        return True
    if role == "customer":
        return credential == "customer"
    return credential == "admin" or (role == "staff" and credential == "staff")


def denied(response) -> bool:
    if response.status_code in (401, 403):
        return True
    # Sent to sign in (signing out also ends on the sign-in page, but not with `next`).
    return response.status_code in (302, 303, 307) and response.headers["location"].startswith("/console/login?next=")


@pytest.fixture(scope="module")
def offline_settings(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Settings:
    """An app with its own database and no model server (nothing listens on its vLLM port)."""
    data = tmp_path_factory.mktemp("console-access")
    return Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'app.db'}",
        base_model=base_model_dir,
        vllm_url=f"http://127.0.0.1:{free_port()}",
    )


@pytest.fixture(scope="module")
def app_client(offline_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(offline_settings)) as client:
        yield client


@pytest.fixture(scope="module")
def world(app_client: TestClient) -> dict:
    """Accounts and a customer's conversation for the matrix to aim at."""
    engine = app_client.app.state.services.engine  # type: ignore[attr-defined]
    admin = make_staff(engine, "admin@example.com", "Ada Admin", StaffRole.admin)
    staff = make_staff(engine, "sam@example.com", "Sam Staff")
    cid, token, messages = seed_conversation(engine, status=ConversationStatus.pending_human, reason="handoff")
    return {"engine": engine, "admin": admin, "staff": staff, "cid": cid, "token": token, "messages": messages}


def routes(app) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            found += [(method, route.path) for method in sorted(route.methods - {"HEAD"})]
    return found


def fill(path: str, world: dict, conversation_id: str | None = None) -> str:
    values = {
        "conversation_id": conversation_id or world["cid"], "message_id": str(world["messages"]["answer"]),
        "staff_id": str(world["staff"].id), **HARMLESS,
    }  # fmt: skip
    return re.sub(r"\{(\w+)\}", lambda match: values[match.group(1)], path)


def call(client: TestClient, method: str, url: str, credential: str, world: dict):
    """One request as `credential`; staff and admin get a fresh session, since some routes sign out."""
    headers: dict[str, str] = {}
    client.cookies.clear()
    if credential == "customer":
        headers["Authorization"] = f"Bearer {world['token']}"
    elif credential in ("staff", "admin"):
        signed: Staff = new_session(world["engine"], world[credential].id)
        client.cookies.set(SESSION_COOKIE, signed.cookie)
        headers["X-CSRF-Token"] = signed.csrf
    body = {"json": {}} if method in UNSAFE else {}
    # Streamed, so the customer's live event stream is only opened, not followed.
    with client.stream(method, url, headers=headers, follow_redirects=False, **body) as response:
        return response


def test_the_matrix_covers_the_console_staff_admin_and_customer_routes(app_client: TestClient) -> None:
    found = {(method, path): required_role(method, path) for method, path in routes(app_client.app)}
    roles = set(found.values())
    assert roles == set(ROLES), roles
    for page in ("/console", "/console/conversations/{conversation_id}", "/console/staff", "/console/audit"):
        assert ("GET", page) in found
    for page in ("/console/models", "/console/models/runs/{run_id}"):
        assert found.get(("GET", page)) == "admin", page
    assert ("POST", "/api/staff/conversations/{conversation_id}/claim") in found
    assert ("POST", "/api/conversations/{conversation_id}/messages") in found


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_only_the_right_role_gets_through(app_client: TestClient, world: dict, credential: str) -> None:
    wrong = []
    for method, path in routes(app_client.app):
        role = required_role(method, path)
        if method == "POST" and path == "/api/admin/runs" and credential == "admin":
            continue  # would really start retraining; checked below without side effects
        response = call(app_client, method, fill(path, world), credential, world)
        expected = gets_through(role, credential)
        if denied(response) == expected or (expected and role != "public" and response.status_code >= 500):
            wrong.append(f"{method} {path} ({role}) as {credential}: {response.status_code}")
    assert not wrong, "\n".join(wrong)


def test_starting_retraining_is_for_admins(app_client: TestClient, world: dict) -> None:
    # A run already queued makes the admin's request stop at 409 after the role check, starting nothing.
    with Session(world["engine"]) as session:
        crud.create_training_run(session=session, trigger="access test")
    for credential, allowed in (("nobody", False), ("customer", False), ("staff", False), ("admin", True)):
        response = call(app_client, "POST", "/api/admin/runs", credential, world)
        assert denied(response) != allowed, (credential, response.status_code)


def test_console_pages_send_strangers_to_the_sign_in_page(app_client: TestClient, world: dict) -> None:
    app_client.cookies.clear()
    response = app_client.get(f"/console/conversations/{world['cid']}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/console/login?next=/console/conversations/{world['cid']}"
    api = app_client.get("/api/staff/conversations")
    assert api.status_code == 401 and api.json()["error"]["code"] == "not_signed_in"


def test_staff_get_403_on_admin_pages(app_client: TestClient, world: dict) -> None:
    response = call(app_client, "GET", "/console/staff", "staff", world)
    assert response.status_code == 403
    response = call(app_client, "POST", "/api/staff/accounts", "staff", world)
    assert response.status_code == 403
    for page in ("/console/models", "/console/models/runs/1"):
        response = call(app_client, "GET", page, "staff", world)
        assert response.status_code == 403, page


def test_tokens_do_not_cross_over(app_client: TestClient, world: dict) -> None:
    """A customer token is no staff cookie, and a staff session token opens no customer conversation."""
    app_client.cookies.clear()
    app_client.cookies.set(SESSION_COOKIE, world["token"])
    assert app_client.get("/api/staff/conversations").status_code == 401
    app_client.cookies.clear()
    staff = new_session(world["engine"], world["staff"].id)
    response = app_client.get(f"/api/conversations/{world['cid']}", headers={"Authorization": f"Bearer {staff.cookie}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_token"


def test_state_changes_without_the_csrf_token_are_refused(app_client: TestClient, world: dict) -> None:
    cid, _, _ = seed_conversation(world["engine"], status=ConversationStatus.pending_human)
    wrong = []
    for method, path in routes(app_client.app):
        role = required_role(method, path)
        if method not in UNSAFE or role not in ("staff", "admin"):
            continue
        for token in (None, "forged"):
            signed = new_session(world["engine"], world["admin"].id)
            app_client.cookies.clear()
            app_client.cookies.set(SESSION_COOKIE, signed.cookie)
            headers = {"X-CSRF-Token": token} if token else {}
            response = app_client.request(
                method,
                fill(path, world, cid),
                headers=headers,
                data={"csrf_token": token or ""},
                follow_redirects=False,
            )
            if response.status_code != 403:
                wrong.append(f"{method} {path} with CSRF token {token!r}: {response.status_code}")
    assert not wrong, "\n".join(wrong)
    with Session(world["engine"]) as session:
        assert crud.get_assignment(session=session, conversation_id=cid) is None
        assert crud.get_conversation(session=session, conversation_id=cid).status == ConversationStatus.pending_human


def test_another_sessions_csrf_token_does_not_work(app_client: TestClient, world: dict) -> None:
    mine, theirs = (new_session(world["engine"], world["staff"].id) for _ in range(2))
    app_client.cookies.clear()
    app_client.cookies.set(SESSION_COOKIE, mine.cookie)
    url = f"/api/staff/conversations/{world['cid']}/tags"
    assert app_client.post(url, json={"name": "x"}, headers={"X-CSRF-Token": theirs.csrf}).status_code == 403
    assert app_client.post(url, json={"name": "x"}, headers={"X-CSRF-Token": mine.csrf}).status_code == 200


def test_sign_in_form_needs_its_csrf_cookie(app_client: TestClient, world: dict) -> None:
    app_client.cookies.clear()
    form = {"email": world["staff"].email, "password": PASSWORD, "csrf_token": "made-up", "next": "/console"}
    response = app_client.post("/console/login", data=form, follow_redirects=False)
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.cookies

    page = app_client.get("/console/login")
    form["csrf_token"] = app_client.cookies[LOGIN_CSRF_COOKIE]
    assert f'value="{form["csrf_token"]}"' in page.text
    response = app_client.post("/console/login", data=form, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/console"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()


def test_signing_in_refuses_open_redirects_and_wrong_passwords(app_client: TestClient, world: dict) -> None:
    app_client.cookies.clear()
    app_client.get("/console/login")
    token = app_client.cookies[LOGIN_CSRF_COOKIE]
    form = {"email": world["staff"].email, "password": "not the password", "csrf_token": token, "next": "/console"}
    response = app_client.post("/console/login", data=form, follow_redirects=False)
    assert response.status_code == 401 and "Wrong email or password" in response.text
    form.update(password=PASSWORD, csrf_token=app_client.cookies[LOGIN_CSRF_COOKIE], next="//evil.example/x")
    response = app_client.post("/console/login", data=form, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/console"


def test_signing_out_and_deactivation_end_sessions_at_once(app_client: TestClient, world: dict) -> None:
    engine = world["engine"]
    leaving = make_staff(engine, "leaving@example.com", "Lee Leaving")
    other_device = new_session(engine, leaving.id)
    app_client.cookies.clear()
    app_client.cookies.set(SESSION_COOKIE, leaving.cookie)
    response = app_client.post("/console/logout", data={"csrf_token": leaving.csrf}, follow_redirects=False)
    assert response.status_code == 303
    app_client.cookies.clear()
    app_client.cookies.set(SESSION_COOKIE, leaving.cookie)
    assert app_client.get("/api/staff/session").status_code == 401

    app_client.cookies.set(SESSION_COOKIE, other_device.cookie)
    assert app_client.get("/api/staff/session").status_code == 200
    admin = new_session(engine, world["admin"].id)
    app_client.cookies.set(SESSION_COOKIE, admin.cookie)
    response = app_client.patch(f"/api/staff/accounts/{leaving.id}", json={"active": False}, headers=admin.headers)
    assert response.status_code == 200 and response.json()["active"] is False
    app_client.cookies.set(SESSION_COOKIE, other_device.cookie)
    assert app_client.get("/api/staff/session").status_code == 401


def forget_sign_in_failures(engine) -> None:
    with Session(engine) as session:
        crud.forget_counts(session=session, before=float("inf"))


def test_failed_sign_ins_are_throttled(app_client: TestClient, world: dict) -> None:
    forget_sign_in_failures(world["engine"])
    app_client.cookies.clear()
    bad = {"email": world["staff"].email, "password": "guess"}
    statuses = [app_client.post("/api/staff/session", json=bad).status_code for _ in range(11)]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    # Even the right password waits until the window has passed.
    right = app_client.post("/api/staff/session", json={"email": world["staff"].email, "password": PASSWORD})
    assert right.status_code == 429
    forget_sign_in_failures(world["engine"])
    right = app_client.post("/api/staff/session", json={"email": world["staff"].email, "password": PASSWORD})
    assert right.status_code == 200 and right.json()["csrf_token"]


def test_the_session_cookie_is_secure_outside_local_mode(app_client: TestClient, world: dict) -> None:
    production = Settings(mode="production", secret_key="a-real-secret-for-this-test")
    with Session(world["engine"]) as session:
        account = crud.get_staff(session=session, staff_id=world["staff"].id)
        for settings, secure in ((production, True), (Settings(), False)):
            response = Response(status_code=204)
            staff_session = sign_in(session, account, response, settings)
            cookie = response.headers["set-cookie"]
            assert ("Secure" in cookie) is secure, cookie
            assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
            assert staff_session.expires_at > utcnow()
