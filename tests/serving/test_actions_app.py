"""`supportbot start` in local mode: the customer API answers "where is my order?" from the demo shop's order API,
which the app serves at /demo-shop and calls over real HTTP; the trace and the guessing limit are stored.

vLLM is a stand-in (an action's reply never needs the model); the app, its classifier, store and shop are real.
"""

from pathlib import Path

import httpx
from sqlmodel import Session

from conversations import crud
from core.settings import Settings
from serving.app import create_app
from serving.demo_shop import seeded_orders
from tests.conftest import TEST_DATA
from tests.utils.conversation import bot_reply, open_conversation, send
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.ports import free_port
from tests.utils.shop import Served

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
