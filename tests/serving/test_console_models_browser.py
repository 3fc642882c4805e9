"""The console's models page in a real browser (headless Chromium through Playwright): an admin watches a
retraining run's progress and loss plot update live, reads a finished run's data card and its evaluation
beside the adapter in service, cancels a run, promotes an older adapter and rolls back; staff are kept out.

No real training runs here (it takes minutes): runs are written to the store as the worker writes them,
two adapter folders are made in the app's own data folder, and a stand-in for vLLM accepts hot-loads.
Delete docs/console-models.png and run this test to refresh the README's screenshot.
"""

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlmodel import Session

from conversations import crud
from conversations.models import RunStatus, StaffRole, TrainingRun, utcnow
from core.settings import Settings
from runtime.registry import ADAPTER_META, AdapterRegistry
from serving.auth import SESSION_COOKIE
from tests.conftest import ROOT
from tests.utils.browser import Server
from tests.utils.staff import make_staff

playwright = pytest.importorskip("playwright.sync_api")

SCREENSHOT = ROOT / "docs" / "console-models.png"
LIVE_WAIT_MS = 15_000


class FakeVLLM:
    """Accepts adapter hot-loads the way vLLM does, and remembers which adapters it was asked to load."""

    def __init__(self) -> None:
        loaded: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/v1/load_lora_adapter":
                    loaded.append(body["lora_name"])
                    self.send_response(200)
                else:
                    self.send_response(404)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.loaded = loaded
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


def make_adapter(registry: AdapterRegistry, name: str, steps: int, first_loss: float, last_loss: float) -> None:
    """An adapter folder as training leaves it (only its metadata file: nothing loads the weights here)."""
    folder = registry.path(name)
    folder.mkdir(parents=True)
    meta = {"adapter_dir": str(folder), "steps": steps, "examples": 120, "trained_tokens": 9000, "seconds": 312.0,
            "first_loss": first_loss, "last_loss": last_loss, "recipe": {"rank": 16}, "best_step": steps}  # fmt: skip
    (folder / ADAPTER_META).write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def fake_vllm() -> Iterator[FakeVLLM]:
    server = FakeVLLM()
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path, fake_vllm: FakeVLLM) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("console-models")
    settings = Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'app.db'}",
        base_model=base_model_dir,
        vllm_url=fake_vllm.url,
        retrain_daily_at=None,
        retrain_after_reviews=0,
    )
    registry = AdapterRegistry(settings.adapters_dir)
    make_adapter(registry, "domain-v1", 40, 2.31, 1.94)
    make_adapter(registry, "domain-v2", 60, 2.28, 1.71)
    registry.promote("domain-v1")
    registry.promote("domain-v2")
    with Server(settings) as running:
        yield running


def scores(model: str, loss: float, rouge: float, passed: int, failed: list[str]) -> dict:
    """A model's scores; its checks as customers get them fail only the first of the bare model's failures."""
    told = {check: f"Told about {check}." for check in failed[:1]}
    return {
        "model": model, "loss": loss, "perplexity": round(math.exp(loss), 3), "rouge_l": rouge,
        "checks_passed": passed, "checks_total": 6, "failed_checks": failed,
        "customer_checks_passed": 6 - len(told), "customer_checks_total": 6, "failed_customer_checks": told,
        "samples": [
            {"prompt": "Where is my order LL-1042?", "reference": "It left our workshop on Monday.",
             "reply": f"Your order LL-1042 is on its way ({model})."},
        ],
    }  # fmt: skip


def curve(steps: range) -> list[list[float]]:
    """Training loss as it usually falls: fast at first, then flattening, with some noise."""
    return [[step, round(1.65 + 0.7 * math.exp(-step / 12) + 0.04 * math.sin(step * 1.7), 4)] for step in steps]


def add_run(engine, status: RunStatus, **fields: object) -> int:
    """A run row as the retraining worker leaves it."""
    with Session(engine) as session:
        run = crud.create_training_run(session=session, trigger=str(fields.pop("trigger", "manual")))
        assert run.id is not None
        crud.update_training_run(session=session, run_id=run.id, status=status, **fields)
        return run.id


def read_run(engine, run_id: int) -> TrainingRun:
    with Session(engine) as session:
        return crud.get_training_run(session=session, run_id=run_id)


def signed_in_page(browser, server: Server, cookie: str):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.add_cookies([{"name": SESSION_COOKIE, "value": cookie, "url": server.url}])
    page = context.new_page()
    page.set_default_timeout(LIVE_WAIT_MS)
    return page


def plot_points(page, scope: str) -> int:
    points = page.locator(f"{scope} svg.loss-plot polyline.train").get_attribute("points") or ""
    return len(points.split())


def test_admins_watch_compare_cancel_promote_and_roll_back(server: Server, browser, fake_vllm: FakeVLLM) -> None:
    expect = playwright.expect
    expect.set_options(timeout=LIVE_WAIT_MS)
    engine = server.engine
    admin = make_staff(engine, "ada@example.com", "Ada Admin", StaffRole.admin)
    card = {
        "conversations": 42, "assistant_turns": 118, "corrected_turns": 7,
        "by_split": {"train": 34, "validation": 4, "evaluation": 4}, "by_source": {"reviewed": 12, "seed": 30},
        "by_intent": {"order_status": 15, "return_item": 11, "damaged_item": 9, "unknown": 7},
        "dropped": {"duplicate": 3, "no usable assistant turn": 1},
    }  # fmt: skip
    finished = add_run(
        engine, RunStatus.finished, trigger="schedule:daily", adapter="domain-v2", dataset_hash="ab12" * 16,
        started_at=utcnow(), finished_at=utcnow(), promoted=True, card=card,
        progress={"stage": "done", "step": 60, "total": 60, "loss": 1.71, "eta_s": 0,
                  "curve": curve(range(1, 61, 3)), "validation": [[20, 1.95], [40, 1.81], [60, 1.76]]},
        report={
            "candidate": {**scores("domain-v2", 1.7612, 0.412, 6, []), "by_source": {
                "store": {"conversations": 3, "turns": 9, "loss": 1.61, "rouge_l": 0.44},
                "seed": {"conversations": 1, "turns": 3, "loss": 2.02, "rouge_l": 0.33}}},
            "in_service": {**scores("domain-v1", 1.8934, 0.377, 5, ["refund-window"]), "by_source": {
                "store": {"conversations": 3, "turns": 9, "loss": 1.8, "rouge_l": 0.37},
                "seed": {"conversations": 1, "turns": 3, "loss": 2.0, "rouge_l": 0.4}}},
            "decision": {"promote": True, "reasons": ["not worse on any metric"],
                         "decided_on": "company's conversations"},
            "evaluation_conversations": 4,
            "gate": {"loss_tolerance": 0.02, "rouge_tolerance": 0.01, "checks_tolerance": 0},
        },
    )  # fmt: skip
    interrupted = add_run(
        engine, RunStatus.interrupted, adapter="domain-v3", started_at=utcnow(), error="worker exited with code -9",
        progress={"stage": "training", "step": 6, "total": 40, "loss": 2.1, "eta_s": 200,
                  "curve": curve(range(1, 7)), "validation": []},
    )  # fmt: skip
    plan = {
        "new_conversations": 120,
        "replay_conversations": 30,
        "new_by_source": {"store": 120},
        "tokens": 61000,
        "steps": 60,
        "tokens_per_second": 305.0,
        "estimated_s": 200,
        "time_bound_s": 400,
        "fits": True,
        "speed_from": "domain-v2",
        "notes": [],
    }
    running_progress = {"stage": "training", "step": 10, "total": 40, "loss": 1.9, "eta_s": 95,
                        "curve": curve(range(1, 11)), "validation": [[5, 2.2], [10, 2.05]]}  # fmt: skip
    running = add_run(engine, RunStatus.running, adapter="domain-v3", started_at=utcnow(), progress=running_progress)

    page = signed_in_page(browser, server, admin.cookie)
    page.goto(f"{server.url}/console")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Models").click()
    expect(page).to_have_url(f"{server.url}/console/models")

    # Every run, newest first; the one running is shown live with its loss plot.
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_have_attribute("data-status", "running")
    expect(rows.nth(1)).to_have_attribute("data-status", "interrupted")
    expect(rows.nth(2).locator("[data-field=summary]")).to_have_text(
        "loss 1.7612 vs 1.8934 · checks as customers get them 6/6 vs 5/6 · bare model 6/6 vs 5/6"
    )
    live = page.locator(f"section.live-run[data-run='{running}']")
    expect(live.locator("[data-field=steps]")).to_have_text("10 / 40")
    expect(live.locator("[data-field=eta]")).to_have_text("1 min 35 s")
    # What the run learns and its time bound: the page shows them as soon as the worker has written them.
    expect(live.locator("[data-field=plan]")).to_have_count(0)
    running_progress = {**running_progress, "plan": plan}
    with Session(engine) as session:
        crud.update_training_run(session=session, run_id=running, progress=running_progress)
    expect(live.locator("[data-field=plan]")).to_contain_text("Learns 120 new conversations (company's 120) once")
    expect(live.locator("[data-field=plan]")).to_contain_text("time bound 6 min 40 s")
    expect(live.locator("svg.loss-plot")).to_have_attribute("data-points", "10")
    assert plot_points(page, "section.live-run") == 10
    expect(live.locator("svg.loss-plot circle.validation")).to_have_count(2)

    # The worker reports more steps: the page follows without being reloaded.
    page.evaluate("window.notReloaded = true")
    running_progress = {**running_progress, "step": 14, "loss": 1.74, "eta_s": 52, "curve": curve(range(1, 15)),
                        "validation": [[5, 2.2], [10, 2.05], [14, 1.93]]}  # fmt: skip
    with Session(engine) as session:
        crud.update_training_run(session=session, run_id=running, progress=running_progress)
    expect(live.locator("[data-field=steps]")).to_have_text("14 / 40")
    expect(live.locator("[data-field=loss]")).to_have_text("1.74")
    expect(live.locator("svg.loss-plot")).to_have_attribute("data-points", "14")
    expect(live.locator("svg.loss-plot circle.validation")).to_have_count(3)
    expect(rows.nth(0).locator("[data-field=summary]")).to_have_text("training · step 14/40 · loss 1.74")
    assert page.evaluate("window.notReloaded") is True

    # Only one run at a time: the API's refusal shows in the page's error area.
    page.get_by_role("button", name="Start retraining").click()
    expect(page.locator("#models-error")).to_have_text(f"A retraining run is already going (run {running} is running).")
    rows.nth(1).get_by_role("button", name="Resume").click()
    expect(page.locator("#models-error")).to_have_text(f"run {running} is running")

    # Cancel: asked once, then the worker is told to stop at its next step.
    page.once("dialog", lambda dialog: dialog.accept())
    rows.nth(0).get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("status")).to_contain_text("Cancel requested")
    assert read_run(engine, running).cancel_requested
    expect(rows.nth(0)).to_contain_text("stopping")
    expect(rows.nth(0).get_by_role("button", name="Cancel")).to_be_disabled()
    # The worker stops: the page reloads by itself and offers to resume.
    with Session(engine) as session:
        crud.update_training_run(session=session, run_id=running, status=RunStatus.cancelled, finished_at=utcnow())
    expect(rows.nth(0)).to_have_attribute("data-status", "cancelled")
    expect(rows.nth(0).get_by_role("button", name="Resume")).to_be_visible()
    expect(page.locator("section.live-run")).to_have_count(0)

    # A finished run: its data card, and its evaluation beside the adapter that was in service.
    rows.nth(2).get_by_role("link", name=f"#{finished}").click()
    expect(page).to_have_url(f"{server.url}/console/models/runs/{finished}")
    report = page.locator("table.report")
    expect(report.locator("thead")).to_contain_text("Candidate domain-v2")
    expect(report.locator("thead")).to_contain_text("In service domain-v1")
    expect(report.locator("tr[data-metric=loss] td")).to_have_text(["1.7612 better", "1.8934"])
    expect(report.locator("tr[data-metric=perplexity] td").nth(1)).to_have_text(f"{math.exp(1.8934):.3f}")
    expect(report.locator("tr[data-metric=rouge_l] td")).to_have_text(["0.412 better", "0.377"])
    expect(report.locator("tr[data-metric=checks] td")).to_have_text(["6 / 6 better", "5 / 6"])
    expect(report.locator("tr[data-metric=failed_checks] td")).to_have_text(["none", "refund-window"])
    # The checks as customers get them, with the reply a customer would have got.
    expect(report.locator("tr[data-metric=customer_checks] td")).to_have_text(["6 / 6 better", "5 / 6"])
    told = report.locator("tr[data-metric=failed_customer_checks] td")
    expect(told).to_have_text(["none", "refund-window"])
    expect(told.nth(1).locator("code")).to_have_attribute("title", "Told about refund-window.")
    expect(report.locator("tr[data-metric=checks] th")).to_have_text("Must-pass checks, the bare model")
    # Per source: the company's own conversations decide, the seed ones guard against forgetting.
    sources = page.locator("table.by-source")
    expect(sources.locator("tr[data-source=store] td")).to_have_text(
        ["1.6100 better", "1.8000", "0.440 better", "0.370"]
    )
    expect(sources.locator("tr[data-source=seed] th")).to_contain_text("forgetting guard")
    expect(sources.locator("tr[data-source=seed] td")).to_have_text(["2.0200 worse", "2.0000", "0.330 worse", "0.400"])
    expect(page.get_by_text("Decided on the company's conversations")).to_be_visible()
    expect(page.locator(".decision")).to_contain_text("Passed the gate: promoted")
    expect(page.locator(".decision")).to_contain_text("not worse on any metric")
    expect(page.locator("table.samples tbody tr td")).to_have_text(
        ["Where is my order LL-1042?", "It left our workshop on Monday.",
         "Your order LL-1042 is on its way (domain-v2).", "Your order LL-1042 is on its way (domain-v1)."]
    )  # fmt: skip
    expect(page.locator("[data-card=conversations]")).to_have_text("42")
    expect(page.locator("[data-card=by_split]")).to_have_text("train 34 · validation 4 · evaluation 4")
    expect(page.locator("[data-card=dropped]")).to_have_text("duplicate 3 · no usable assistant turn 1")
    expect(page.locator("[data-card=corrected_turns]")).to_have_text("7 turns")
    expect(page.locator("svg.loss-plot")).to_have_attribute("data-points", "20")
    expect(page.locator("svg.loss-plot circle.validation")).to_have_count(3)
    if not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

    # The interrupted run says why it stopped.
    page.goto(f"{server.url}/console/models/runs/{interrupted}")
    expect(page.locator(".run-error")).to_contain_text("worker exited with code -9")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()

    # Promote the older adapter: vLLM is asked to load it, and it answers customers from then on.
    page.goto(f"{server.url}/console/models")
    expect(page.locator("#in-service")).to_have_text("domain-v2")
    versions = page.locator("#adapters tbody tr")
    expect(versions).to_have_count(2)
    expect(versions.nth(0)).to_contain_text(f"run #{finished}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#adapters tr[data-adapter=domain-v1]").get_by_role("button", name="Promote").click()
    expect(page.get_by_role("status")).to_contain_text("Adapter promoted")
    expect(page.locator("#in-service")).to_have_text("domain-v1")
    assert fake_vllm.loaded[-1] == "domain-v1"
    assert server.services.dialogue.models.current() == "domain-v1"

    # Roll back to the one promoted before it.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Roll back to domain-v2").click()
    expect(page.get_by_role("status")).to_contain_text("Rolled back")
    expect(page.locator("#in-service")).to_have_text("domain-v2")
    assert server.services.dialogue.models.current() == "domain-v2"

    with Session(engine) as session:
        logged = [(entry.action, entry.target) for entry in crud.list_audit(session=session, limit=50)]
    for action in (("retrain.cancel", f"run:{running}"), ("adapter.promote", "domain-v1"),
                   ("adapter.promote", "domain-v2")):  # fmt: skip
        assert action in logged, logged


def test_staff_do_not_see_the_models_page(server: Server, browser) -> None:
    staff = make_staff(server.engine, "sam@example.com", "Sam Staff")
    page = signed_in_page(browser, server, staff.cookie)
    page.goto(f"{server.url}/console")
    expect = playwright.expect
    expect(page.get_by_role("navigation", name="Console").get_by_role("link", name="Inbox")).to_be_visible()
    expect(page.get_by_role("navigation", name="Console").get_by_role("link", name="Models")).to_have_count(0)
    for path in ("/console/models", "/console/models/runs/1"):
        response = page.goto(f"{server.url}{path}")
        assert response is not None and response.status == 403
        expect(page.locator("h1")).to_have_text("403: not allowed")
