"""The console's Reports page: how the bot and the desk did over a date range, as charts drawn on the server
with pygal (SVG images, no script in the browser), tables beside them, a CSV download and the same numbers as
JSON under /api/staff/reports."""

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

import pygal
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from pygal.style import Style

from conversations.reports import InvalidRange, Report, build_report
from conversations.transfer import csv_cell
from serving.console.pages import render
from serving.deps import CurrentStaff, SessionDep
from serving.errors import ApiError

router = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api/staff", tags=["staff desk"])

DEFAULT_DAYS = 30
CHARTS = ("conversations", "resolved", "handoffs", "satisfaction", "thumbs", "first_response", "intents")
TABLES = ("daily", "handoffs", "intents", "gaps")
STYLE = Style(
    background="white", plot_background="white", foreground="#1f2933", foreground_strong="#1f2933",
    foreground_subtle="#9aa5b1", colors=("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed"),
    font_family="system-ui, sans-serif",
)  # fmt: skip


def date_range(start: str | None, end: str | None) -> tuple[date, date]:
    """The report's days from the `from` and `to` query values (YYYY-MM-DD); by default the last 30 days."""
    try:
        until = date.fromisoformat(end) if end else datetime.now(UTC).date()
        since = date.fromisoformat(start) if start else until - timedelta(days=DEFAULT_DAYS - 1)
    except ValueError:
        raise ApiError(422, "invalid_range", "Dates are written YYYY-MM-DD.") from None
    return since, until


def report_for(session: SessionDep, start: str | None, end: str | None) -> Report:
    since, until = date_range(start, end)
    try:
        return build_report(session=session, since=since, until=until)
    except InvalidRange as error:
        raise ApiError(422, "invalid_range", str(error)) from None


From = Annotated[str | None, Query(alias="from", max_length=10)]
To = Annotated[str | None, Query(alias="to", max_length=10)]


def _chart(kind: type, title: str, labels: list[str], **options: object):
    chart = kind(
        js=[], style=STYLE, width=720, height=320, title=title, x_labels=labels, show_x_labels=True,
        x_label_rotation=30 if len(labels) > 10 else 0, legend_at_bottom=True, truncate_label=-1,
        print_values=False, **options,
    )  # fmt: skip
    if len(labels) > 14:
        # A month of days: every few days labelled, so the dates stay readable.
        chart.show_minor_x_labels = False
        chart.x_labels_major = labels[:: max(len(labels) // 10, 1)]
    return chart


def draw(report: Report, name: str) -> bytes:
    """One chart of the report as an SVG document."""
    days = [day.day.isoformat() for day in report.days]
    if name == "conversations":
        chart = _chart(pygal.Bar, "Conversations per day", days)
        chart.add("conversations", [day.conversations for day in report.days])
        chart.add("handed to people", [day.handed_off for day in report.days])
    elif name == "resolved":
        chart = _chart(pygal.Line, "Share resolved by the bot (%)", days, range=(0, 100))
        chart.add("resolved by the bot", [
            round(100 * day.resolved_by_bot / day.conversations, 1) if day.conversations else None
            for day in report.days
        ])  # fmt: skip
    elif name == "handoffs":
        chart = _chart(pygal.HorizontalBar, "Handoffs by reason", [])
        for reason, count in report.handoff_reasons[:10]:
            chart.add(reason, count)
    elif name == "satisfaction":
        chart = _chart(pygal.Line, "Customer satisfaction (average of 1-5)", days, range=(1, 5))
        chart.add("CSAT", [day.csat_average for day in report.days])
    elif name == "thumbs":
        chart = _chart(pygal.StackedBar, "Thumbs on bot replies", days)
        chart.add("up", [day.thumbs_up for day in report.days])
        chart.add("down", [day.thumbs_down for day in report.days])
    elif name == "first_response":
        chart = _chart(pygal.Line, "First response by a teammate (median, minutes)", days)
        chart.add("median", [
            round(day.first_response_median_s / 60, 1) if day.first_response_median_s is not None else None
            for day in report.days
        ])  # fmt: skip
    elif name == "intents":
        chart = _chart(pygal.HorizontalBar, "Top intents", [])
        for intent, count in report.top_intents:
            chart.add(intent, count)
    else:
        raise ApiError(404, "no_such_chart", f"Charts: {', '.join(CHARTS)}.")
    chart.no_data_text = "No data in this range"
    return chart.render()


def table(report: Report, name: str) -> list[list[object]]:
    """One table of the report, header first, as the CSV download writes it."""
    if name == "daily":
        rows: list[list[object]] = [[
            "date", "conversations", "handed_off", "resolved_by_bot", "csat_average", "csat_ratings", "thumbs_up",
            "thumbs_down", "first_response_median_s",
        ]]  # fmt: skip
        for day in report.days:
            rows.append([
                day.day.isoformat(), day.conversations, day.handed_off, day.resolved_by_bot, day.csat_average,
                len(day.csat_scores), day.thumbs_up, day.thumbs_down, day.first_response_median_s,
            ])  # fmt: skip
        return rows
    if name == "handoffs":
        return [["reason", "handoffs"], *[[reason, count] for reason, count in report.handoff_reasons]]
    if name == "intents":
        return [["intent", "customer_messages"], *[[intent, count] for intent, count in report.top_intents]]
    if name == "gaps":
        return [
            ["question", "times_asked", "last_asked", "conversation_id"],
            *[[gap.question, gap.count, gap.last_asked.isoformat(), gap.conversation_id] for gap in report.gaps],
        ]
    raise ApiError(404, "no_such_table", f"Tables: {', '.join(TABLES)}.")


@router.get("/console/reports")
def reports_page(
    signed: CurrentStaff, request: Request, session: SessionDep, start: From = None, end: To = None
) -> HTMLResponse:
    try:
        report = report_for(session, start, end)
    except ApiError as error:
        since, until = date.today() - timedelta(days=DEFAULT_DAYS - 1), date.today()
        return render(
            request, "reports.html", signed, error.status, section="reports", error=error.message, report=None,
            since=start or since.isoformat(), until=end or until.isoformat(), query="",
        )  # fmt: skip
    query = f"from={report.since.isoformat()}&to={report.until.isoformat()}"
    return render(
        request, "reports.html", signed, section="reports", report=report, since=report.since.isoformat(),
        until=report.until.isoformat(), query=query, charts=CHARTS,
    )  # fmt: skip


@router.get("/console/reports/charts/{name}.svg")
def chart(name: str, signed: CurrentStaff, session: SessionDep, start: From = None, end: To = None) -> Response:
    svg = draw(report_for(session, start, end), name)
    # Shown as an image: its own styles apply, and nothing in it may load or run anything.
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}
    return Response(svg, media_type="image/svg+xml", headers=headers)


@router.get("/console/reports.csv")
def download(
    signed: CurrentStaff, session: SessionDep, start: From = None, end: To = None,
    name: Annotated[Literal["daily", "handoffs", "intents", "gaps"], Query(alias="table")] = "daily",
) -> Response:  # fmt: skip
    report = report_for(session, start, end)
    buffer = io.StringIO()
    csv.writer(buffer).writerows([csv_cell(value) for value in row] for row in table(report, name))
    filename = f"supportbot-{name}-{report.since.isoformat()}-{report.until.isoformat()}.csv"
    return Response(
        buffer.getvalue(), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )  # fmt: skip


class ReportPublic(BaseModel):
    """The report's numbers: totals, and each table as rows with a header row first."""

    since: date
    until: date
    conversations: int
    resolved_by_bot_share: float | None
    csat_average: float | None
    first_response_median_s: float | None
    tables: dict[str, list[list[object]]]


@api.get("/reports")
def read_report(signed: CurrentStaff, session: SessionDep, start: From = None, end: To = None) -> ReportPublic:
    """How the bot and the desk did from `from` to `to` (YYYY-MM-DD, UTC days; by default the last 30 days)."""
    report = report_for(session, start, end)
    return ReportPublic(
        since=report.since, until=report.until, conversations=report.conversations,
        resolved_by_bot_share=report.resolved_by_bot_share, csat_average=report.csat_average,
        first_response_median_s=report.first_response_median_s,
        tables={name: table(report, name) for name in TABLES},
    )  # fmt: skip
