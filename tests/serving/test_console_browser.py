"""The staff console in a real browser (headless Chromium through Playwright): sign in, find the waiting
conversation at the top of a live inbox, review and relabel, take over and answer, sign out.

The app runs under uvicorn on a fresh database with no model server: the scenes are seeded in the store.
Delete docs/console.png and run this test to refresh the README's screenshot.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conversations.models import ConversationStatus, StaffRole
from core.settings import Settings
from tests.conftest import ROOT
from tests.utils.browser import Server
from tests.utils.conversation import send
from tests.utils.ports import free_port
from tests.utils.staff import PASSWORD, make_staff, seed_conversation

playwright = pytest.importorskip("playwright.sync_api")

SCREENSHOT = ROOT / "docs" / "console.png"
LIVE_WAIT_MS = 15_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("console-browser")
    settings = Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'app.db'}",
        base_model=base_model_dir,
        vllm_url=f"http://127.0.0.1:{free_port()}",
    )
    with Server(settings) as running:
        yield running


def test_staff_review_and_take_over_a_conversation(server: Server, browser) -> None:
    expect = playwright.expect
    engine = server.engine
    make_staff(engine, "ada@example.com", "Ada Admin", StaffRole.admin)
    seed_conversation(engine)
    older, _, _ = seed_conversation(engine, status=ConversationStatus.pending_human, reason="handoff: complaint")
    seed_conversation(engine, status=ConversationStatus.resolved)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(LIVE_WAIT_MS)
    expect.set_options(timeout=LIVE_WAIT_MS)

    # Signing in: the console sends strangers to the sign-in page, and back after.
    page.goto(f"{server.url}/console")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server.url}/console")

    # The inbox puts the conversation waiting for a human on top, and a new one appears there live.
    rows = page.locator("#inbox-rows tr.conversation")
    expect(rows.first).to_have_attribute("data-id", older)
    expect(rows.first).to_have_attribute("data-status", "pending_human")
    cid, token, ids = seed_conversation(engine, status=ConversationStatus.pending_human, reason="handoff: complaint")
    expect(rows.first).to_have_attribute("data-id", cid)
    expect(rows).to_have_count(4)

    # The transcript: every turn with the bot's intent, confidence, decision, adapter and the customer's rating.
    rows.first.get_by_role("link").click()
    expect(page).to_have_url(f"{server.url}/console/conversations/{cid}")
    answer = page.locator(f"#m{ids['answer']}")
    expect(answer.locator(".facts")).to_contain_text("decision answer")
    expect(answer.locator(".facts")).to_contain_text("confidence 62%")
    expect(answer.locator(".facts")).to_contain_text("adapter domain-v1")
    expect(answer.locator(".facts")).to_contain_text("customer rated it down")
    expect(page.locator(f"#m{ids['handoff']} .facts")).to_contain_text("decision handoff")

    # Review: the reply was bad, and this is what it should have said.
    answer.get_by_label("Bad").check()
    answer.get_by_label("The reply it should have given").fill("Sorry it arrived broken! We'll send a new shade.")
    answer.get_by_role("button", name="Save review").click()
    expect(page.get_by_role("status")).to_have_text("Review saved.")
    expect(page.locator(f"#m{ids['answer']} legend")).to_contain_text("bad")

    # Relabel: the customer meant a damaged item, not a return.
    ask = page.locator(f"#m{ids['ask']}")
    ask.get_by_label("Relabel intent").select_option("damaged_item")
    ask.get_by_role("button", name="Relabel").click()
    expect(page.locator(f"#m{ids['ask']}")).to_contain_text("relabelled → damaged_item")

    page.get_by_label("Add tag").fill("broken-item")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator("#tags")).to_contain_text("broken-item")
    page.get_by_label("Reviewed").check()
    page.get_by_label("Use for training").check()
    page.locator("#mark-form").get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Conversation review saved.")
    expect(page.get_by_label("Use for training")).to_be_checked()

    # Take over, and answer the customer in real time.
    page.get_by_role("button", name="Take over").click()
    expect(page.get_by_role("status")).to_contain_text("You have taken over")
    page.get_by_label(re.compile("Reply to the customer")).fill("Hi, Ada here. A new shade is on its way.")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("li.msg.role-staff")).to_contain_text("A new shade is on its way.")
    expect(page.get_by_text("taken over by Ada Admin")).to_be_visible()
    with httpx.Client(base_url=server.url, timeout=30) as customer:
        transcript = customer.get(f"/api/conversations/{cid}", headers={"Authorization": f"Bearer {token}"}).json()
        assert transcript["messages"][-1]["author"] == "Ada Admin"
        assert transcript["conversation"]["status"] == "human"
        # The customer answers; the bot stays silent and the staff member sees the message arrive.
        events = send(customer, cid, {"Authorization": f"Bearer {token}"}, "Thank you so much!")
        assert "bot_message" not in [name for name, _ in events]
    expect(page.locator("li.msg.role-customer").last).to_contain_text("Thank you so much!")
    # New turns are appended in place; the status did not change, so no "reload" banner.
    expect(page.locator("#live-banner")).to_be_hidden()

    if not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))

    # Signing out ends the session: the console asks for a sign-in again.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto(f"{server.url}/console")
    expect(page).to_have_url(re.compile(r"/console/login"))
