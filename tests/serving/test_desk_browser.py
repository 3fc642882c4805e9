"""The support desk in a real browser (headless Chromium through Playwright): the unassigned queue and overdue
timers in the inbox, assigning a conversation, an internal note, answering with a canned reply, and the
reports page with its charts, date filter and CSV download.

The app runs under uvicorn on a fresh database with no model server: the conversations are seeded in the store.
"""

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from conversations import crud
from conversations.models import ConversationStatus, StaffRole, utcnow
from core.settings import Settings
from tests.conftest import ROOT
from tests.utils.browser import Server
from tests.utils.ports import free_port
from tests.utils.reports import DAY_ONE, DAY_TWO, seed_report_world
from tests.utils.staff import PASSWORD, make_staff, seed_conversation

playwright = pytest.importorskip("playwright.sync_api")

WAIT_MS = 15_000
# The README's picture of the reports page: delete it and run this file to take it again.
SCREENSHOT = ROOT / "docs" / "console-reports.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("desk-browser")
    settings = Settings(
        data_dir=data, database_url=f"sqlite:///{data / 'app.db'}", base_model=base_model_dir,
        vllm_url=f"http://127.0.0.1:{free_port()}", desk_first_response_minutes=15,
    )  # fmt: skip
    with Server(settings) as running:
        yield running


def waiting(engine, minutes_ago: float, reason: str = "handoff: complaint") -> tuple[str, str]:
    cid, token, _ = seed_conversation(engine, status=ConversationStatus.pending_human, reason=reason)
    with Session(engine) as session:
        crud.open_ticket(session=session, conversation_id=cid, reason=reason,
                         now=utcnow() - timedelta(minutes=minutes_ago))  # fmt: skip
    return cid, token


def sign_in(page, url: str, email: str) -> None:
    page.goto(f"{url}/console/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    playwright.expect(page).to_have_url(f"{url}/console")


def test_assign_note_and_answer_with_a_canned_reply(server: Server, browser) -> None:
    expect = playwright.expect
    expect.set_options(timeout=WAIT_MS)
    engine = server.engine
    make_staff(engine, "ada@example.com", "Ada Admin", StaffRole.admin)
    make_staff(engine, "bea@example.com", "Bea Staff")
    late, token = waiting(engine, minutes_ago=45)
    fresh, _ = waiting(engine, minutes_ago=1)
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    page.set_default_timeout(WAIT_MS)
    sign_in(page, server.url, "ada@example.com")

    # A canned reply with placeholders, kept for the whole team.
    page.get_by_role("link", name="Canned replies").click()
    form = page.locator("#new-canned")
    form.get_by_label("Title").fill("Apology")
    form.get_by_label("Text").fill("Hi {customer_name}, {agent_name} from {company_name} here. Sorry about the lamp!")
    form.get_by_role("button", name="Save canned reply").click()
    expect(page.get_by_role("status")).to_have_text("Canned reply saved.")
    expect(page.locator("#canned-replies tr[data-title='Apology']")).to_be_visible()

    # The unassigned queue, with the customer waiting past the 15-minute target highlighted.
    page.goto(f"{server.url}/console?queue=unassigned")
    late_row = page.locator(f"#inbox-rows tr[data-id='{late}']")
    expect(late_row).to_have_class(re.compile(r"\boverdue\b"))
    expect(late_row.locator(".timer.first-response.overdue")).to_contain_text("45 min")
    fresh_row = page.locator(f"#inbox-rows tr[data-id='{fresh}']")
    expect(fresh_row).not_to_have_class(re.compile(r"\boverdue\b"))
    expect(fresh_row.locator(".assigned")).to_contain_text("unassigned")

    # Assign it to Bea and the returns team; it leaves the unassigned queue.
    late_row.get_by_role("link").click()
    page.get_by_label("Teammate").select_option(label="Bea Staff")
    page.locator("#assign-form").get_by_label("Team", exact=True).fill("returns")
    page.get_by_role("button", name="Assign").click()
    expect(page.get_by_role("status")).to_have_text("Assignment saved.")
    expect(page.locator("#assigned-to")).to_contain_text("Bea Staff")
    expect(page.locator("#assigned-to")).to_contain_text("returns")

    # An internal note for the team.
    page.get_by_label("Add a note").fill("Second broken lamp this month: offer a replacement, not a refund.")
    page.get_by_role("button", name="Add note").click()
    expect(page.get_by_role("status")).to_have_text("Note added: only teammates see it.")
    expect(page.locator("#notes")).to_contain_text("Second broken lamp this month")
    expect(page.locator("#notes")).to_contain_text("Ada Admin")

    # Take over and answer with the canned reply, filled in for this conversation.
    page.get_by_role("button", name="Take over").click()
    page.get_by_label("Canned reply").select_option(label="Apology")
    page.get_by_role("button", name="Insert").click()
    reply = page.get_by_label(re.compile("Reply to the customer"))
    expect(reply).to_have_value("Hi {customer_name}, Ada Admin from Lumen & Loom here. Sorry about the lamp!")
    reply.fill("Hi, Ada Admin from Lumen & Loom here. Sorry about the lamp!")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("li.msg.role-staff")).to_contain_text("Sorry about the lamp!")

    page.goto(f"{server.url}/console?queue=unassigned")
    expect(page.locator(f"#inbox-rows tr[data-id='{fresh}']")).to_be_visible()
    expect(page.locator(f"#inbox-rows tr[data-id='{late}']")).to_have_count(0)
    page.goto(f"{server.url}/console?team=returns")
    expect(page.locator(f"#inbox-rows tr[data-id='{late}'] .timer.first-response")).not_to_have_class(
        re.compile(r"\boverdue\b")
    )  # answered: the first-response timer stopped

    # The customer sees the answer, never the note.
    with httpx.Client(base_url=server.url, timeout=30) as customer:
        transcript = customer.get(f"/api/conversations/{late}", headers={"Authorization": f"Bearer {token}"}).text
    assert "Sorry about the lamp!" in transcript and "Second broken lamp" not in transcript


def test_the_reports_page_draws_charts_filters_by_date_and_downloads_csv(server: Server, browser) -> None:
    expect = playwright.expect
    expect.set_options(timeout=WAIT_MS)
    make_staff(server.engine, "rita@example.com", "Rita Reports")
    seed_report_world(server.engine)
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.set_default_timeout(WAIT_MS)
    sign_in(page, server.url, "rita@example.com")

    page.get_by_role("link", name="Reports").click()
    range_form = page.locator("#report-range")
    range_form.get_by_label("From").fill(DAY_ONE.isoformat())
    range_form.get_by_label("To").fill(DAY_TWO.isoformat())
    range_form.get_by_role("button", name="Show").click()
    expect(page.locator("[data-kpi=conversations]")).to_have_text("7")
    expect(page.locator("[data-kpi=resolved]")).to_have_text("57%")
    expect(page.locator("[data-kpi=first-response]")).to_have_text("10 min 0 s")
    expect(page.locator("#handoff-reasons")).to_contain_text("language de is not served")
    expect(page.locator("#content-gaps")).to_contain_text("Do you sell gift cards?")
    # Every chart is an SVG drawn on the server that the browser could load and lay out.
    images = page.locator("figure.chart img")
    expect(images).to_have_count(7)
    for index in range(7):
        image = images.nth(index)
        image.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())

    if not SCREENSHOT.exists():
        page.screenshot(path=str(SCREENSHOT), full_page=False)

    # One day only: the numbers follow the filter.
    range_form.get_by_label("To").fill(DAY_ONE.isoformat())
    range_form.get_by_role("button", name="Show").click()
    expect(page.locator("[data-kpi=conversations]")).to_have_text("4")
    expect(page.locator("#content-gaps")).not_to_contain_text("gift cards")

    with page.expect_download() as downloading:
        page.get_by_role("link", name="Download CSV (per day)").click()
    download = downloading.value
    assert download.suggested_filename == f"supportbot-daily-{DAY_ONE}-{DAY_ONE}.csv"
    lines = Path(download.path()).read_text().splitlines()
    assert lines[0].startswith("date,conversations,handed_off,resolved_by_bot,csat_average")
    assert lines[1].startswith(f"{DAY_ONE},4,2,2,3.5,2,1,1,600.0")
