"""`supportbot start` in local mode: the customer API answers "where is my order?" from the demo shop's order API,
which the app serves at /demo-shop and calls over real HTTP; the trace and the guessing limit are stored.

vLLM is a stand-in (an action's reply never needs the model); the app, its classifier, store and shop are real.
"""

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, func, select

from bot.domain import DomainPackError, default_pack_path, load_pack
from bot.slots import mask
from conversations import crud
from conversations.models import Conversation, StaffRole
from core.settings import Settings
from serving.app import create_app
from serving.demo_shop import seeded_orders
from serving.identity import sign
from serving.services import build_actions
from tests.conftest import TEST_DATA
from tests.utils.browser import chromium
from tests.utils.conversation import bot_reply, open_conversation, send
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.ports import free_port
from tests.utils.shop import Served
from tests.utils.staff import make_staff

ORDER = seeded_orders()["LL-104233"]
OTHER = seeded_orders()["LL-104240"]
SECRET = "site-secret-for-tests-0123456789"


class ShopApp:
    """The local app (its /demo-shop included) served on a free port, with a stand-in vLLM."""

    def __init__(self, app, served: Served, vllm: FakeVLLM) -> None:
        self.app, self.url, self.vllm = app, served.url, vllm
        self.engine = app.state.services.engine


@pytest.fixture(scope="module")
def shop_app(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Iterator[ShopApp]:
    vllm = FakeVLLM("solo").start()
    port = free_port()
    database = tmp_path_factory.mktemp("actions-app") / "app.db"
    settings = Settings(
        data_dir=TEST_DATA, base_model=base_model_dir, database_url=f"sqlite:///{database}", vllm_url=vllm.url,
        port=port, retention_every_hours=0, widget_identity_secret=SECRET,
    )  # fmt: skip
    app = create_app(settings)
    try:
        with Served(app, port=port) as served:
            yield ShopApp(app, served, vllm)
    finally:
        vllm.stop()


def test_the_local_app_looks_up_an_order_in_its_demo_shop(shop_app: ShopApp) -> None:
    app, vllm, chats_before = shop_app.app, shop_app.vllm, shop_app.vllm.chats()
    with httpx.Client(base_url=shop_app.url, timeout=60) as client:
        # The shop's API is real HTTP and wants its key.
        assert client.get(f"/demo-shop/orders/{ORDER.order_number}").status_code == 401
        conversation_id, headers = open_conversation(client)
        asked = bot_reply(send(client, conversation_id, headers, f"Where is my order {ORDER.order_number}?"))
        assert "e-mail address" in asked["text"] and asked["decision"] == "ask_details"

        wrong = bot_reply(send(client, conversation_id, headers, "it's someone.else@example.com"))
        assert "couldn't find an order with that order number and e-mail" in wrong["text"]
        assert ORDER.tracking_number not in wrong["text"]

        answer = bot_reply(send(client, conversation_id, headers, f"sorry, it is {ORDER.customer_email}"))
        assert ORDER.tracking_number in answer["text"] and f"with {ORDER.carrier}" in answer["text"]
        assert answer["decision"] == "answer"
        # Admins see the calls and their failures in the metrics.
        metrics = client.get("/metrics").text
        for outcome in ("ok", "not found"):
            found = re.search(
                rf'supportbot_action_calls_total{{action="order_status",outcome="{outcome}"}} (\S+)', metrics
            )
            assert found and float(found.group(1)) >= 1, outcome
        assert 'supportbot_action_seconds_count{action="order_status"}' in metrics
        # Staff see the call in the transcript's trace, the e-mail masked.
        admin = make_staff(app.state.services.engine, "ada@example.com", "Ada", StaffRole.admin)
        client.cookies.update(admin.cookies)
        page = client.get(f"/console/conversations/{conversation_id}")
        assert page.status_code == 200, page.text
        assert "<b>order_status</b> ok · HTTP 200 · 1 attempt(s)" in page.text
        assert "<b>order_status</b> not found · HTTP 200" in page.text  # the wrong e-mail: the order exists
        assert f"email <code>{ORDER.customer_email[0]}***@example.com</code>" in page.text
        # The trace's slots and the conversation's details are masked too, in the page and the staff API.
        masked = f"{ORDER.customer_email[0]}***@example.com"
        assert f"&#39;email&#39;: &#39;{masked}&#39;" in page.text
        assert f"&#39;email&#39;: &#39;{ORDER.customer_email}&#39;" not in page.text
        staff_view = client.get(f"/api/staff/conversations/{conversation_id}").json()
        assert staff_view["conversation"]["slots"]["email"] == masked
        traces = [m["trace"] for m in staff_view["messages"] if m["trace"]]
        assert traces[-1]["slots"]["email"] == masked
        assert all("***@example.com" in t["slots"]["email"] for t in traces if "email" in t["slots"])
        # Only what the customer wrote themselves still holds their e-mail.
        for message in staff_view["messages"]:
            if message["role"] == "customer":
                message["text"] = ""
        assert ORDER.customer_email not in str(staff_view)
    with Session(app.state.services.engine) as session:
        conversation = crud.get_conversation(session=session, conversation_id=conversation_id)
        stored = crud.list_messages(session=session, conversation_id=conversation_id)
    assert conversation.identity_failures == 1  # kept between turns: guessing is limited per conversation
    trace = stored[-1].trace["action"]
    assert trace["outcome"] == "ok" and trace["inputs"]["email"].startswith(ORDER.customer_email[0] + "***@")
    assert ORDER.customer_email not in str(trace)
    assert vllm.chats() == chats_before  # the model wrote none of it


def test_start_up_checks_the_actions_and_needs_an_api_outside_local_mode(tmp_path: Path) -> None:
    pack_dir = tmp_path / "pack"
    shutil.copytree(default_pack_path(), pack_dir)
    pack = load_pack(pack_dir)
    local = build_actions(Settings(data_dir=tmp_path), pack)
    assert local is not None and local.base_url == "http://127.0.0.1:8000/demo-shop"

    production = {"mode": "production", "secret_key": "a-real-secret-0123456789", "data_dir": tmp_path}
    assert build_actions(Settings(**production), pack) is None  # no demo shop there, and no API named: off
    with pytest.raises(DomainPackError, match=r"needs secret\(s\) \['demo_shop_key'\]"):
        build_actions(Settings(**production, actions_base_url="https://shop.example.com/api"), pack)
    configured = build_actions(
        Settings(**production, actions_base_url="https://shop.example.com/api", action_secrets={"demo_shop_key": "k"}),
        pack,
    )
    assert configured is not None and configured.base_url == "https://shop.example.com/api"

    (pack_dir / "actions.yaml").write_text("- name: order_status\n  description: broken\n", encoding="utf-8")
    with pytest.raises(DomainPackError, match=r"actions.yaml:1: .*intents: Field required"):
        build_actions(Settings(data_dir=tmp_path), load_pack(pack_dir))


def signed(user_id: str, email: str, expires: int, secret: str = SECRET) -> dict:
    return {"user_id": user_id, "email": email, "expires": expires, "hash": sign(secret, user_id, email, expires)}


def test_a_signed_identity_shows_the_customer_their_orders_and_a_bad_or_expired_one_is_refused(shop_app) -> None:
    later = int(time.time()) + 600
    with httpx.Client(base_url=shop_app.url, timeout=60) as client:
        opened = client.post(
            "/api/conversations", json={"channel": "web", "identity": signed("c-7", ORDER.customer_email, later)}
        )
        assert opened.status_code == 201 and opened.json()["verified"] is True
        conversation_id, headers = (
            opened.json()["conversation"]["id"],
            {"Authorization": f"Bearer {opened.json()['token']}"},
        )
        # No e-mail asked for: the site vouched for this customer.
        answer = bot_reply(send(client, conversation_id, headers, f"Where is my order {ORDER.order_number}?"))
        assert answer["decision"] == "answer" and ORDER.tracking_number in answer["text"]
        # Someone else's order stays hidden from a verified customer too, with the same reply as an unknown one.
        other = bot_reply(send(client, conversation_id, headers, f"And where is order {OTHER.order_number}?"))
        assert "couldn't find an order with that order number and e-mail" in other["text"]
        assert OTHER.placed_on not in other["text"]

        refusals = {
            "wrong secret": signed("c-7", ORDER.customer_email, later, secret="another-site-secret-0123"),
            "another e-mail under the hash": {
                **signed("c-7", OTHER.customer_email, later),
                "email": ORDER.customer_email,
            },
            "a later expiry under the hash": {**signed("c-7", ORDER.customer_email, later), "expires": later + 86400},
        }
        for why, identity in refusals.items():
            refused = client.post("/api/conversations", json={"channel": "web", "identity": identity})
            assert refused.status_code == 403, why
            assert refused.json()["error"] == {
                "code": "identity_refused",
                "message": "The signed identity was refused.",
            }
        expired = client.post(
            "/api/conversations",
            json={"channel": "web", "identity": signed("c-7", ORDER.customer_email, int(time.time()) - 5)},
        )
        assert expired.status_code == 403 and expired.json()["error"]["code"] == "identity_expired"
        malformed = client.post("/api/conversations", json={"channel": "web", "identity": {"user_id": "c-7"}})
        assert malformed.status_code == 422
    with Session(shop_app.engine) as session:
        conversation = crud.get_conversation(session=session, conversation_id=conversation_id)
        messages = crud.list_messages(session=session, conversation_id=conversation_id)
        opened_count = session.exec(
            select(func.count()).select_from(Conversation).where(Conversation.verified_user_id == "c-7")
        ).one()
    assert conversation.verified_user_id == "c-7" and conversation.verified_email == ORDER.customer_email
    assert opened_count == 1  # the refused identities opened nothing
    trace = messages[1].trace["action"]
    assert trace["identity"] == "signed" and trace["inputs"]["email"] == mask(ORDER.customer_email)


def account_page(shop_app: ShopApp, user_id: str, expires: int, digest: str) -> str:
    """A shop's page for a signed-in customer, embedding the widget with their signed identity."""
    return (
        f'<!doctype html><html lang="en"><body><h1>My account</h1><script src="{shop_app.url}/widget.js" '
        f'data-user-id="{user_id}" data-user-email="{ORDER.customer_email}" data-user-expires="{expires}" '
        f'data-user-hash="{digest}"></script></body></html>'
    )


def ask_in_widget(browser, shop_app: ShopApp, html: str, question: str, answer_holds: str) -> tuple[list, list]:
    """Open the page in a fresh browser context, ask in the widget until a reply holds `answer_holds`; returns
    the bodies the widget opened conversations with and the page's localStorage keys."""
    context = browser.new_context()
    page = context.new_page()
    opened: list[dict] = []

    def record(request) -> None:
        if request.url.endswith("/api/conversations") and request.method == "POST":
            opened.append(request.post_data_json)

    page.on("request", record)
    page.route(f"{shop_app.url}/account", lambda route: route.fulfill(status=200, content_type="text/html", body=html))
    page.goto(f"{shop_app.url}/account")
    page.locator(".sb-launcher").click()
    page.get_by_role("textbox", name="Message").fill(question)
    page.get_by_role("button", name="Send", exact=True).click()
    page.locator(".sb-log .sb-msg--bot[data-id] .sb-text").filter(has_text=answer_holds).wait_for(timeout=60_000)
    keys = page.evaluate("Object.keys(localStorage)")
    context.close()
    return opened, keys


def test_the_widget_passes_the_signed_identity_from_its_script_tag(shop_app) -> None:
    later = int(time.time()) + 600
    identity = signed("c-widget", ORDER.customer_email, later)
    question = f"Where is my order {ORDER.order_number}?"
    with chromium() as browser:
        opened, keys = ask_in_widget(
            browser, shop_app, account_page(shop_app, "c-widget", later, identity["hash"]), question,
            ORDER.tracking_number,
        )  # fmt: skip
        # A signature the app refuses: the widget still opens a conversation, in which the e-mail is asked for.
        forged, _ = ask_in_widget(
            browser, shop_app, account_page(shop_app, "c-forged", later, identity["hash"]), question, "e-mail address"
        )
    assert opened == [{"channel": "web", "identity": identity}]
    assert any(key.endswith(":c-widget") for key in keys)  # each signed-in customer resumes only their own
    assert forged == [{"channel": "web", "identity": {**identity, "user_id": "c-forged"}}, {"channel": "web"}]


def test_an_order_is_cancelled_after_a_yes_audited_and_failures_are_listed_for_staff(shop_app) -> None:
    recent = seeded_orders()["LL-104436"]  # placed this morning in the shop's clock: cancellable
    shop_key = {"Authorization": f"Bearer {shop_app.app.state.services.settings.demo_shop_key}"}
    with httpx.Client(base_url=shop_app.url, timeout=60) as client:
        conversation_id, headers = open_conversation(client)
        asked = bot_reply(
            send(
                client,
                conversation_id,
                headers,
                f"Please cancel order {recent.order_number}, e-mail {recent.customer_email}",
            )
        )
        assert asked["text"].startswith(f"I'll cancel order {recent.order_number}.") and "yes or no" in asked["text"]
        assert client.get(f"/demo-shop/orders/{recent.order_number}", headers=shop_key).json()["status"] == "processing"
        done = bot_reply(send(client, conversation_id, headers, "yes"))
        assert done["text"].startswith(f"Done: order {recent.order_number} is cancelled")
        assert client.get(f"/demo-shop/orders/{recent.order_number}", headers=shop_key).json()["status"] == "cancelled"
        bot_reply(send(client, conversation_id, headers, "yes"))  # nothing waits for a yes any more

        # Staff read the audit: who, what, when and the result, the e-mail masked; one change for one yes.
        staff = make_staff(shop_app.engine, "sam@example.com", "Sam", StaffRole.staff)
        client.cookies.update(staff.cookies)
        audit = client.get("/api/staff/action-calls", params={"changes": "true", "conversation_id": conversation_id})
        assert audit.status_code == 200, audit.text
        [row] = audit.json()
        assert row["action"] == "cancel_order" and row["outcome"] == "ok" and row["failed"] is False
        assert row["identity"] == "e-mail" and row["inputs"] == {
            "order_number": recent.order_number,
            "email": mask(recent.customer_email),
        }
        assert row["status_code"] == 200 and row["idempotency_key"] and row["at"]
        assert recent.customer_email not in audit.text

        # The order system going down: the failure is listed for staff with its reason, time and conversation.
        runner = shop_app.app.state.services.dialogue.actions
        working_url, runner.base_url = runner.base_url, f"http://127.0.0.1:{free_port()}/demo-shop"
        try:
            down_id, down_headers = open_conversation(client)
            bot_reply(
                send(client, down_id, down_headers, f"Where is my order {ORDER.order_number}? {ORDER.customer_email}")
            )
        finally:
            runner.base_url = working_url
        [failure] = client.get("/api/staff/action-calls", params={"failed": "true", "conversation_id": down_id}).json()
        assert failure["outcome"] == "unavailable" and failure["attempts"] == 2 and failure["status_code"] is None
        page = client.get("/console/actions")
        assert page.status_code == 200
        assert f'href="/console/conversations/{down_id}#m{failure["message_id"]}"' in page.text
        assert conversation_id not in page.text  # the default view lists failures only
        changes_page = client.get("/console/actions", params={"show": "changes"}).text
        assert conversation_id in changes_page and "cancel_order" in changes_page
