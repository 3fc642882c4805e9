"""Learning from the gaps on the console's Knowledge page: a question the bot could not answer and a teammate then
did is listed for admins; approved, the teammate's answer becomes a help snippet the bot answers the next customer
from (in the passages' own words, the product's default); dismissed, it leaves the list.

The app runs in-process on a fresh SQLite database with the demo pack's articles and the real encoder and answer
selection, in front of a stand-in model server: with answers from the passages the model is not asked.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from conversations import crud
from conversations import knowledge as kb
from conversations.models import StaffRole, utcnow
from serving.app import create_app
from serving.console.knowledge import snippet_draft
from tests.conftest import stand_in_settings_at
from tests.utils.conversation import bot_reply, open_conversation, send
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.staff import Staff, make_staff

QUESTION = "Do you engrave watches?"
ANSWER = "Yes, we engrave watches and jewellery for $12 per item: choose Engraving at checkout."
PARAPHRASE = "Can I get a watch engraved?"
PERSONAL_QUESTION = "Is your packaging recyclable or is it all plastic?"
PERSONAL_ANSWER = "All cardboard: write to jo.bloggs@example.com or call 0161 496 0753 for the details."


@pytest.fixture
def app(stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    settings = stand_in_settings_at(tmp_path, stand_in_vllm, base_model_dir, answers_from="passages")
    with TestClient(create_app(settings)) as http:
        yield http


def ask(app: TestClient, question: str) -> tuple[str, dict]:
    """A new customer conversation asking `question`: its id and the bot's stored reply."""
    conversation_id, headers = open_conversation(app)
    return conversation_id, bot_reply(send(app, conversation_id, headers, question))


def signed_in(app: TestClient, who: Staff) -> None:
    app.cookies.clear()
    app.cookies.update(who.cookies)


def teammate_answers(app: TestClient, teammate: Staff, conversation_id: str, text: str) -> None:
    """A teammate takes the conversation over and replies, through the console's own forms."""
    signed_in(app, teammate)
    for action, form in (("claim", {}), ("reply", {"text": text})):
        response = app.post(
            f"/console/conversations/{conversation_id}/{action}", data={"csrf_token": teammate.csrf, **form},
            follow_redirects=False,
        )  # fmt: skip
        assert response.status_code == 303, response.text


def gap_card(page: str, conversation_id: str) -> str:
    """The Knowledge page's entry for the answered gap of this conversation ('' when it is not listed)."""
    cards = re.findall(r'<article class="gap".*?</article>', page, re.S)
    return next((card for card in cards if f"/console/conversations/{conversation_id}" in card), "")


def test_an_approved_teammate_answer_becomes_a_snippet_the_bot_answers_from(app: TestClient) -> None:
    engine = app.app.state.services.engine  # type: ignore[attr-defined]
    teammate = make_staff(engine, "tom@example.com", "Tom Teammate")
    admin = make_staff(engine, "ada@example.com", "Ada Admin", StaffRole.admin)

    conversation_id, reply = ask(app, QUESTION)
    assert reply["text"].startswith("I'm not sure"), reply["text"]
    teammate_answers(app, teammate, conversation_id, ANSWER)
    personal_id, reply = ask(app, PERSONAL_QUESTION)
    assert reply["text"].startswith("I'm not sure"), reply["text"]
    teammate_answers(app, teammate, personal_id, PERSONAL_ANSWER)

    # Both are listed for admins, with the question as the title and the answer as the text.
    signed_in(app, admin)
    page = app.get("/console/knowledge")
    assert page.status_code == 200
    card = gap_card(page.text, conversation_id)
    assert f'value="{QUESTION}"' in card and "Tom Teammate" in card
    assert "$12 per item: choose Engraving at checkout.</textarea>" in card
    # Personal data in a teammate's answer is masked in the text offered for every customer to read.
    personal = gap_card(page.text, personal_id)
    assert "write to [email] or call [phone] for the details." in personal
    assert "jo.bloggs" not in page.text and "496 0753" not in page.text

    # Before: the bot cannot answer a paraphrase of the question.
    _, before = ask(app, PARAPHRASE)
    assert before["text"].startswith("I'm not sure"), before["text"]

    # Approved as it is: a new article, sourced and audited, and the gap leaves the list.
    [question_id] = re.findall(r'action="/console/knowledge/gaps/(\d+)"', card)
    response = app.post(
        f"/console/knowledge/gaps/{question_id}", follow_redirects=False,
        data={"csrf_token": admin.csrf, "title": QUESTION, "text": ANSWER},
    )  # fmt: skip
    assert response.status_code == 303, response.text
    slug = f"snippet-{question_id}"
    assert response.headers["location"].startswith(f"/console/knowledge/{slug}?notice=snippet_created")
    with Session(engine) as session:
        [version] = kb.article_history(session=session, slug=slug)
        audit = [(entry.action, entry.target) for entry in crud.list_audit(session=session)]
    assert (version.title, version.text, version.changed_by) == (QUESTION, ANSWER, "ada@example.com")
    assert version.source == f"teammate answer in conversation {conversation_id}"
    assert ("kb.create", f"article:{slug}") in audit
    page = app.get("/console/knowledge").text
    assert gap_card(page, conversation_id) == "" and gap_card(page, personal_id)
    assert f'data-slug="{slug}"' in page

    # The next customer asking in other words is answered from the snippet, by the passages' own words.
    paraphrase_id, after = ask(app, PARAPHRASE)
    assert "$12 per item" in after["text"], after["text"]
    with Session(engine) as session:
        trace = crud.get_message(session=session, conversation_id=paraphrase_id, message_id=after["id"]).trace
    assert trace["check"]["verdict"] == "from the passages"
    assert any(passage["slug"] == slug for passage in trace["passages"])

    # A second approval of the same gap is refused on the page; nothing is saved twice.
    again = app.post(
        f"/console/knowledge/gaps/{question_id}",
        data={"csrf_token": admin.csrf, "title": QUESTION, "text": ANSWER},
    )  # fmt: skip
    assert again.status_code == 409 and "already" in again.text

    # "Not a snippet": the other gap leaves the list, and no article is made of it.
    [personal_question] = re.findall(r'action="/console/knowledge/gaps/(\d+)/dismiss"', personal)
    response = app.post(
        f"/console/knowledge/gaps/{personal_question}/dismiss",
        data={"csrf_token": admin.csrf}, follow_redirects=False,
    )  # fmt: skip
    assert response.status_code == 303, response.text
    page = app.get("/console/knowledge").text
    assert gap_card(page, personal_id) == "" and f"snippet-{personal_question}" not in page
    assert "No question the bot could not answer has a teammate" in page


def test_the_snippet_offered_is_the_question_and_answer_cleaned_of_personal_data() -> None:
    gap = crud.AnsweredGap(
        conversation_id="c1", question_id=7, question="  do you   engrave?\n mail me at jo@example.com ", answer_id=9,
        answer="Yes, $12. I've noted +44 161 496 0753 for you.\n", answered_at=utcnow(), author="Tom", thread=(),
    )  # fmt: skip
    draft = snippet_draft(gap)
    assert (draft.slug, draft.title, draft.text) == (
        "snippet-7",
        "Do you engrave? mail me at [email]",
        "Yes, $12. I've noted [phone] for you.",
    )
