"""The desk's reports computed from a store with known conversations: per-day counts, the share the bot
resolved, handoffs by reason, satisfaction and thumbs, first-response time, top intents and content gaps."""

from datetime import timedelta

import pytest
from sqlmodel import Session

from conversations.reports import InvalidRange, build_report
from tests.utils.reports import DAY_ONE, DAY_TWO, seed_report_world


def test_the_report_counts_what_happened_each_day(engine) -> None:
    seed_report_world(engine)
    with Session(engine) as session:
        report = build_report(session=session, since=DAY_ONE, until=DAY_TWO)
    one, two = report.days
    assert (one.conversations, one.handed_off, one.resolved_by_bot) == (4, 2, 2)
    assert (two.conversations, two.handed_off, two.resolved_by_bot) == (3, 1, 2)
    assert report.conversations == 7 and report.resolved_by_bot_share == round(4 / 7, 4)
    assert sorted(report.handoff_reasons) == [
        ("intent complaint is handled by people", 1), ("language de is not served", 1), ("not understood twice", 1),
    ]  # fmt: skip
    assert sorted(one.csat_scores) == [2, 5]
    assert one.csat_average == 3.5 and two.csat_average is None
    assert (one.thumbs_up, one.thumbs_down) == (1, 1)
    assert one.first_response_s == [600.0] and report.first_response_median_s == 600.0
    assert dict(report.top_intents) == {"refund_status": 1, "shipping_info": 1, "complaint": 1, "return_item": 1}
    gaps = [(gap.question, gap.count) for gap in report.gaps]
    assert gaps == [("Do you sell gift cards?", 1), ("blorp the zingle", 1)]


def test_the_date_range_filters_by_the_day_a_conversation_started(engine) -> None:
    seed_report_world(engine)
    with Session(engine) as session:
        second = build_report(session=session, since=DAY_TWO, until=DAY_TWO)
        none = build_report(session=session, since=DAY_TWO + timedelta(days=1), until=DAY_TWO + timedelta(days=5))
        with pytest.raises(InvalidRange):
            build_report(session=session, since=DAY_TWO, until=DAY_ONE)
        with pytest.raises(InvalidRange):
            build_report(session=session, since=DAY_ONE, until=DAY_ONE + timedelta(days=400))
    assert second.conversations == 3 and [gap.question for gap in second.gaps] == ["Do you sell gift cards?"]
    assert none.conversations == 0 and none.resolved_by_bot_share is None and len(none.days) == 5
