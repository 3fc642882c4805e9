"""`supportbot start` in local mode: the customer API answers "where is my order?" from the demo shop's order API,
which the app serves at /demo-shop and calls over real HTTP; the trace and the guessing limit are stored.

vLLM is a stand-in (an action's reply never needs the model); the app, its classifier, store and shop are real.
"""

import re
import shutil
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from bot.domain import DomainPackError, default_pack_path, load_pack
from conversations import crud
from conversations.models import StaffRole
from core.settings import Settings
from serving.app import create_app
from serving.demo_shop import seeded_orders
from serving.services import build_actions
from tests.conftest import TEST_DATA
from tests.utils.conversation import bot_reply, open_conversation, send
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.ports import free_port
from tests.utils.shop import Served
from tests.utils.staff import make_staff

ORDER = seeded_orders()["LL-104233"]


def test_the_local_app_looks_up_an_order_in_its_demo_shop(tmp_path: Path, base_model_dir: Path) -> None:
    vllm = FakeVLLM("solo").start()
    port = free_port()
    settings = Settings(
        data_dir=TEST_DATA, base_model=base_model_dir, database_url=f"sqlite:///{tmp_path / 'app.db'}",
        vllm_url=vllm.url, port=port, retention_every_hours=0,
    )  # fmt: skip
    app = create_app(settings)
    try:
        with Served(app, port=port) as served, httpx.Client(base_url=served.url, timeout=60) as client:
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
        assert vllm.chats() == 0  # the model wrote none of it
    finally:
        vllm.stop()


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
