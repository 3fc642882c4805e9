"""Business hours of a domain pack: a time zone, opening hours per weekday and holidays.

Outside them a handoff tells the customer when a teammate will answer and asks for an e-mail address.
"""

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
# How far ahead the next opening is looked for: a pack closed for longer has no next opening to promise.
_LOOKAHEAD_DAYS = 60


def _span(text: str) -> tuple[time, time]:
    match = _SPAN.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an opening span such as '09:00-18:00'")
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    if end_h == 24 and end_m == 0:
        end_h, end_m = 23, 59
    if not (start_h < 24 and end_h < 24 and start_m < 60 and end_m < 60):
        raise ValueError(f"{text!r} is not a time of day")
    start, end = time(start_h, start_m), time(end_h, end_m)
    if start >= end:
        raise ValueError(f"{text!r} closes before it opens")
    return start, end


class BusinessHours(BaseModel):
    """When teammates answer: `weekly` maps mon..sun to spans like "09:00-18:00" (a day left out is closed),
    in the pack's `timezone`; `holidays` are whole closed days (YYYY-MM-DD)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "UTC"
    weekly: dict[str, list[str]]
    holidays: list[date] = []

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as 'America/New_York')") from None
        return value

    @field_validator("weekly", mode="before")
    @classmethod
    def _one_span_or_many(cls, value: object) -> object:
        if isinstance(value, dict):
            return {day: [spans] if isinstance(spans, str) else spans for day, spans in value.items()}
        return value

    @model_validator(mode="after")
    def _valid_days(self) -> "BusinessHours":
        for day, spans in self.weekly.items():
            if day not in WEEKDAYS:
                raise ValueError(f"weekly: {day!r} is not one of {', '.join(WEEKDAYS)}")
            for span in spans:
                _span(span)
        if not any(self.weekly.values()):
            raise ValueError("weekly: open on at least one day")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _spans(self, day: date) -> list[tuple[time, time]]:
        if day in self.holidays:
            return []
        return sorted(_span(span) for span in self.weekly.get(WEEKDAYS[day.weekday()], []))

    def is_open(self, at: datetime) -> bool:
        local = _aware(at).astimezone(self.zone)
        return any(start <= local.time() < end for start, end in self._spans(local.date()))

    def next_open(self, at: datetime) -> datetime | None:
        """The moment teammates answer again (`at` itself when open now), in the pack's time zone."""
        local = _aware(at).astimezone(self.zone)
        for offset in range(_LOOKAHEAD_DAYS):
            day = local.date() + timedelta(days=offset)
            for start, end in self._spans(day):
                opens = datetime.combine(day, start, self.zone)
                closes = datetime.combine(day, end, self.zone)
                if local < closes:
                    return max(opens, local)
        return None

    def describe_next_open(self, at: datetime) -> str:
        """The next opening as customers read it: "today at 09:00", "tomorrow at 09:00", "Monday 3 March at
        09:00", with the time zone's abbreviation."""
        opens = self.next_open(at)
        if opens is None:
            return "as soon as possible"
        today = _aware(at).astimezone(self.zone).date()
        clock = f"{opens:%H:%M} {opens.tzname()}"
        if opens.date() == today:
            return f"today at {clock}"
        if opens.date() == today + timedelta(days=1):
            return f"tomorrow at {clock}"
        return f"{opens:%A} {opens.day} {opens:%B} at {clock}"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
