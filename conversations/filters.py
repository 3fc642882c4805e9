"""Which conversations staff want to see or export: a validated filter, turned into SQL by `crud`.

Every mistake in a filter (an impossible date, an unknown status, a negative limit) raises
`InvalidFilter` with one line per problem, before any query runs.
"""

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from conversations.models import ConversationStatus, Rating, ReviewRating


class InvalidFilter(ValueError):
    """A conversation filter that cannot be applied; the message says which field and why."""


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "filter"
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"{field}: {message} (got {item['input']!r})" if "input" in item else f"{field}: {message}")
    return "invalid conversation filter: " + "; ".join(problems)


def _as_utc(value: datetime) -> datetime:
    # Stored times are UTC; a time without a zone is taken to be UTC as well.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ConversationFilter(BaseModel):
    """Conditions a conversation must meet (all of them), with the page of results wanted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: ConversationStatus | None = None
    channel: str | None = Field(default=None, min_length=1, max_length=32)
    # Started on or after `created_from` and on or before `created_to` (a bare date covers that whole day).
    created_from: datetime | date | None = None
    created_to: datetime | date | None = None
    # Any customer message whose intent (a staff relabel if there is one, else the prediction) is this.
    intent: str | None = Field(default=None, min_length=1, max_length=64)
    # Any bot reply a reviewer rated so, or a customer rated so (thumbs up/down).
    rating: ReviewRating | None = None
    feedback: Rating | None = None
    # True: handed to a human or flagged for staff; False: the bot handled it alone.
    handed_off: bool | None = None
    # Any customer message understood with a confidence below this.
    low_confidence: float | None = Field(default=None, gt=0, le=1)
    reviewed: bool | None = None
    use_for_training: bool | None = None
    tag: str | None = Field(default=None, min_length=1, max_length=64)
    # Words anywhere in the messages' text, case-insensitive.
    search: str | None = Field(default=None, min_length=1, max_length=200)
    # The desk's queues: waiting for a human with nobody and no team assigned; assigned to this teammate; to a team.
    unassigned: bool | None = None
    assignee_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    team: str | None = Field(default=None, min_length=1, max_length=64)
    # Bounded by the largest id PostgreSQL's `integer` holds: no page can start beyond it.
    offset: int = Field(default=0, ge=0, le=2**31 - 1)
    # None: no limit (exports); listing pages are bounded.
    limit: int | None = Field(default=50, ge=1, le=10_000)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise InvalidFilter(_describe(error)) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as error:
            raise InvalidFilter(_describe(error)) from None

    @field_validator("created_from", "created_to", mode="before")
    @classmethod
    def _parse_moment(cls, value: object) -> object:
        # "2024-05-01" is a day, not midnight: parse it as a date so `created_to` covers the day.
        if isinstance(value, str) and len(value.strip()) == 10:
            try:
                return date.fromisoformat(value.strip())
            except ValueError as error:
                raise ValueError(f"not a date (YYYY-MM-DD): {error}") from None
        return value

    @field_validator("tag", "team")
    @classmethod
    def _normalise_tag(cls, value: str | None) -> str | None:
        return value.strip().lower() if value is not None else None

    @model_validator(mode="after")
    def _range_in_order(self) -> Self:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("created_from must be before created_to")
        return self

    @property
    def since(self) -> datetime | None:
        """Inclusive lower bound on the start time, in UTC."""
        value = self.created_from
        if value is None:
            return None
        return _as_utc(value) if isinstance(value, datetime) else datetime.combine(value, time(), UTC)

    @property
    def until(self) -> datetime | None:
        """Exclusive upper bound on the start time, in UTC."""
        value = self.created_to
        if value is None:
            return None
        if isinstance(value, datetime):
            return _as_utc(value) + timedelta(microseconds=1)
        return datetime.combine(value + timedelta(days=1), time(), UTC)
