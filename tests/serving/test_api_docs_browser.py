"""The API's description pages in a real browser (headless Chromium) on a machine without internet: Swagger UI at
/docs and ReDoc at /redoc load every script and style from the app itself and draw the operations.

The app runs under uvicorn in local mode on a fresh database with no model server; the browser is refused every
address but the app's, as a machine without internet would refuse it.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from tests.utils.browser import Server
from tests.utils.ports import free_port

playwright = pytest.importorskip("playwright.sync_api")

WAIT_MS = 15_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("docs-browser")
    settings = Settings(
        data_dir=data, database_url=f"sqlite:///{data / 'app.db'}", base_model=base_model_dir,
        vllm_url=f"http://127.0.0.1:{free_port()}",
    )  # fmt: skip
    with Server(settings) as running:
        yield running


# Each page's operations as it draws them: Swagger UI's expandable blocks, ReDoc's sections.
@pytest.mark.parametrize(("path", "operations"), [("/docs", ".opblock"), ("/redoc", "[data-section-id^='operation/']")])
def test_the_api_description_draws_without_internet(server: Server, browser, path: str, operations: str) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    elsewhere: list[str] = []
    failed: list[str] = []

    def offline(route) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            # What a page needs to draw; ReDoc's "API docs by Redocly" logo, an image, stays a broken one.
            if route.request.resource_type != "image":
                elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    page.goto(server.url + path)
    drawn = page.locator(operations)
    playwright.expect(drawn.first).to_be_visible(timeout=WAIT_MS)
    assert drawn.count() > 10, "the operations of the customer API, widget and staff desk"
    playwright.expect(page.locator("body")).to_contain_text("/api/conversations", timeout=WAIT_MS)
    assert elsewhere == [] and failed == []
