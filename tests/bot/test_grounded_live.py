"""Grounded answers with the real model: the help content wins over what the model learned in training.

The knowledge base is edited after the adapter was trained (returns within 60 days, not the 30 the seed
conversations taught), so the model's trained belief contradicts the passages it is given.
"""

import re

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from conversations import crud
from conversations.knowledge import ArticleDraft, list_articles, save_article
from core.settings import Settings
from serving.app import create_app
from tests.utils.conversation import bot_reply, open_conversation, send


@pytest.mark.parametrize("answers_from", ["model", "passages"])
def test_a_reply_that_contradicts_the_edited_article_never_reaches_the_customer(
    app_settings: Settings, answers_from: str
) -> None:
    with TestClient(create_app(app_settings.model_copy(update={"answers_from": answers_from}))) as test_client:
        check_the_edited_article_wins(test_client, answers_from)


def check_the_edited_article_wins(test_client: TestClient, answers_from: str) -> None:
    services = test_client.app.state.services
    with Session(services.engine) as session:
        for article in list_articles(session=session, include_retired=False):
            if "30 days of delivery" in article.text:
                edited = article.text.replace("30 days of delivery", "60 days of delivery")
                draft = ArticleDraft(slug=article.slug, title=article.title, text=edited)
                save_article(session=session, draft=draft, changed_by="test")
    services.knowledge.refresh()

    conversation_id, headers = open_conversation(test_client)
    # Worded so that a model trained on "30 days" is likely to repeat it.
    events = send(test_client, conversation_id, headers, "Is it 30 days that I have to return a lamp I bought?")
    reply = bot_reply(events)
    streamed = "".join(data["text"] for name, data in events if name == "token").strip()
    assert reply["text"] == streamed, "what streamed is what was stored"
    assert "60 days" in reply["text"] and not re.search(r"\b30 days\b", reply["text"]), reply["text"]

    with Session(services.engine) as session:
        stored = crud.list_messages(session=session, conversation_id=conversation_id)[-1]
    trace = stored.trace
    assert trace["passages"] and any("60 days of delivery" in p["text"] for p in trace["passages"])
    if answers_from == "passages":
        # The passages' own sentences: the model is not called.
        assert trace["check"]["verdict"] == "from the passages" and stored.model is None
        return
    assert trace["check"]["verdict"] in ("passed", "replaced")
    if trace["check"]["verdict"] == "replaced":
        # What the model wrote is kept for staff, and none of its failing sentences was sent.
        assert trace["replaced"]
        for failure in trace["check"]["failures"]:
            assert failure["sentence"] not in reply["text"] and failure["reasons"]


def test_a_follow_up_is_answered_about_what_the_conversation_is_about(app_settings: Settings) -> None:
    # The second question names nothing: the price asked for is international shipping's, not the domestic options'.
    with TestClient(create_app(app_settings.model_copy(update={"answers_from": "passages"}))) as test_client:
        conversation_id, headers = open_conversation(test_client)
        first = bot_reply(send(test_client, conversation_id, headers, "Do you ship to Canada?"))
        assert re.search(r"Canada", first["text"]), first["text"]
        second = bot_reply(send(test_client, conversation_id, headers, "how much is it?"))
    assert "$19.95" in second["text"], second["text"]
    assert not re.search(r"\$(5\.95|14\.95)", second["text"]), second["text"]
