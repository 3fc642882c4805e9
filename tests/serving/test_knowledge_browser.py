"""The console's Knowledge page in a real browser: an admin edits a help article, adds one and retires
one, and the next customer message is answered from the new text, with no restart.

The app runs under uvicorn on a fresh database, whose knowledge base starts as the demo pack's articles,
with a stand-in model server (tests/utils/fake_vllm.py): what is checked is what the bot retrieved.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from conversations import crud
from conversations.models import StaffRole
from core.settings import Settings
from tests.conftest import ROOT
from tests.serving.test_console_browser import LIVE_WAIT_MS
from tests.utils.browser import Server
from tests.utils.conversation import bot_reply, open_conversation, send
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.staff import PASSWORD, make_staff

playwright = pytest.importorskip("playwright.sync_api")

QUESTION = "How many days do I have to return something?"
# Delete it and run this test to refresh the README's picture of the page.
SCREENSHOT = ROOT / "docs" / "console-knowledge.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("knowledge-browser")
    model = FakeVLLM("the stand-in model").start()
    settings = Settings(
        data_dir=data, database_url=f"sqlite:///{data / 'app.db'}", base_model=base_model_dir, vllm_url=model.url
    )
    try:
        with Server(settings) as running:
            yield running
    finally:
        model.stop()


def retrieved(server: Server, question: str) -> str:
    """The passage the app retrieves first for a customer's question, as the dialogue sees it."""
    return server.app.state.services.knowledge.index.current().search(question)[0].passage.text


def test_an_admin_edits_an_article_and_the_next_answer_uses_it(server: Server, browser) -> None:
    expect = playwright.expect
    make_staff(server.engine, "ada@example.com", "Ada Admin", StaffRole.admin)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(LIVE_WAIT_MS)
    expect.set_options(timeout=LIVE_WAIT_MS)
    page.goto(f"{server.url}/console/login")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert "within 30 days of delivery" in retrieved(server, QUESTION)

    # The pack's articles are the knowledge base on a fresh start.
    page.get_by_role("link", name="Knowledge").click()
    expect(page).to_have_url(f"{server.url}/console/knowledge")
    returns = page.locator("tr[data-slug='returns']")
    expect(returns).to_contain_text("Returns, how to return an item")
    expect(returns).to_contain_text("domain pack")

    # Edit: returns are now accepted for 45 days.
    returns.get_by_role("link", name="Edit").click()
    text = page.get_by_label("Text (Markdown)")
    text.fill(text.input_value().replace("within 30 days of delivery", "within 45 days of delivery"))
    page.get_by_role("button", name="Save new version").click()
    expect(page.get_by_role("status")).to_contain_text("Article saved as a new version")
    history = page.locator("table.history tbody tr")
    if not SCREENSHOT.exists():
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    expect(history.first).to_contain_text("edited")
    expect(history.first).to_contain_text("ada@example.com")
    expect(history.nth(1)).to_contain_text("created")

    # The next customer message is answered from the new text: no restart, no retraining.
    assert "within 45 days of delivery" in retrieved(server, QUESTION)
    with httpx.Client(base_url=server.url, timeout=60) as customer:
        conversation_id, headers = open_conversation(customer)
        reply = bot_reply(send(customer, conversation_id, headers, QUESTION))
    with Session(server.engine) as session:
        trace = crud.get_message(session=session, conversation_id=conversation_id, message_id=reply["id"]).trace
    used = [passage for passage in trace["passages"] if passage["slug"] == "returns"]
    assert used and all(passage["version"] == 2 for passage in used)
    assert any("within 45 days of delivery" in passage["text"] for passage in used)
    assert not any("within 30 days of delivery" in passage["text"] for passage in used)

    # An empty article is refused, with the reason, and the typed text kept.
    page.get_by_role("link", name="← All articles").click()
    page.get_by_label("Id").fill("gift-wrapping")
    page.get_by_label("Title").fill("Gift wrapping")
    page.get_by_label("Text (Markdown)").fill("## Nothing yet")
    page.get_by_role("button", name="Add article").click()
    expect(page.get_by_role("alert")).to_contain_text("has no text")
    expect(page.get_by_label("Id")).to_have_value("gift-wrapping")

    # Add one, then retire it: it is searched while live and not after.
    page.get_by_label("Text (Markdown)").fill("We gift-wrap any order for $4.50. Choose Gift wrap at checkout.")
    page.get_by_role("button", name="Add article").click()
    expect(page.get_by_role("status")).to_contain_text("Article added")
    assert "gift-wrap any order for $4.50" in retrieved(server, "Can you gift wrap my order?")
    page.get_by_role("link", name="← All articles").click()
    page.locator("tr[data-slug='gift-wrapping']").get_by_role("button", name="Retire").click()
    expect(page.get_by_role("status")).to_contain_text("Article retired")
    expect(page.locator("tr[data-slug='gift-wrapping']")).to_contain_text("retired")
    assert "gift-wrap" not in retrieved(server, "Can you gift wrap my order?")

    # Every change is in the audit log under the admin's name.
    with Session(server.engine) as session:
        actions = [entry.action for entry in crud.list_audit(session=session) if entry.target.startswith("article:")]
    assert actions == ["kb.retire", "kb.create", "kb.edited"]
    page.goto(f"{server.url}/console/audit?action=kb.edited")
    expect(page.locator("table.audit")).to_contain_text(re.compile(r"article:returns"))
    page.close()


def test_staff_who_are_not_admins_cannot_change_articles(server: Server) -> None:
    staff = make_staff(server.engine, "bo@example.com", "Bo Staff", StaffRole.staff)
    with httpx.Client(base_url=server.url, cookies=staff.cookies, timeout=30) as client:
        response = client.post(
            "/console/knowledge/returns/retire", data={"csrf_token": staff.csrf}, follow_redirects=False
        )
    assert response.status_code == 403
    assert "returns" in {hit.passage.article_slug for hit in _search(server, QUESTION)}


def _search(server: Server, question: str):
    return server.app.state.services.knowledge.index.current().search(question)


def test_an_edit_made_on_an_old_copy_of_the_page_is_refused(server: Server) -> None:
    admin = make_staff(server.engine, "cy@example.com", "Cy Admin", StaffRole.admin)
    with httpx.Client(base_url=server.url, cookies=admin.cookies, timeout=30, follow_redirects=True) as client:
        page = client.get("/console/knowledge/shipping")
        version = int(re.search(r'name="expected_version" value="(\d+)"', page.text).group(1))  # type: ignore[union-attr]
        form = {"csrf_token": admin.csrf, "title": "Shipping", "expected_version": str(version)}
        saved = client.post("/console/knowledge/shipping", data={**form, "text": "Standard shipping is free."})
        assert saved.status_code == 200 and "Article saved as a new version" in saved.text
        stale = client.post("/console/knowledge/shipping", data={**form, "text": "Express shipping is free."})
    assert stale.status_code == 409
    assert f"now version {version + 1}" in stale.text and "Express shipping is free." in stale.text  # kept to copy
    assert "Standard shipping is free." in _search(server, "Is standard shipping free?")[0].passage.text
