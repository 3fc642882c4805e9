"""One error shape for every 4xx/5xx the API returns: {"error": {"code": ..., "message": ...}}.

Domain packages raise typed exceptions; only this module maps them to HTTP statuses.
"""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from bot.vllm_admin import AdapterLoadFailed
from conversations import crud
from conversations.db import store_busy, store_full
from conversations.text import InvalidText
from runtime.registry import AdapterNotFound
from serving.identity import IdentityExpired, IdentityRefused

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API reports as it is."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ErrorDetail(BaseModel):
    """One problem with a request: the field (dotted path) and what is wrong with it."""

    field: str
    problem: str


class ErrorBody(BaseModel):
    """What went wrong: a stable code for programs and a message for people."""

    code: str
    message: str
    details: list[ErrorDetail] | None = None


class ErrorAnswer(BaseModel):
    """Every 4xx and 5xx answer of the API."""

    error: ErrorBody


# Documented on every route (FastAPI's own 422 shape is replaced: the API answers every error alike).
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorAnswer, "description": description}
    for status, description in [
        (400, "Malformed request"), (401, "Missing or wrong credentials"), (403, "Not allowed"),
        (404, "Not found"), (409, "Conflicts with the current state"), (413, "Too large"),
        (422, "Not in the expected shape"), (429, "Too many requests; see Retry-After"),
        (431, "Request headers too large"), (503, "Busy or unavailable; see Retry-After"),
    ]
}  # fmt: skip


def error_response(status: int, code: str, message: str, details: list | None = None) -> JSONResponse:
    body: dict = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


# The one place typed errors become HTTP: status, and the message the API shows ({error}: the error's own text).
# The code is the error's own (`crud.StoreError.code` and the like), so the API and the store name cases alike.
ERROR_STATUS: dict[type[Exception], tuple[int, str]] = {
    crud.ConversationNotFound: (404, "No conversation has this id."),
    crud.ConversationAccessDenied: (403, "This token does not open this conversation."),
    crud.MessageNotFound: (404, "This conversation has no message with this id."),
    crud.NotABotMessage: (422, "Only the bot's replies can be rated or reviewed."),
    crud.NotACustomerMessage: (422, "Only customer messages have an intent."),
    crud.InvalidLabel: (422, "Tags and intents are 1 to 64 characters."),
    crud.ReviewConflict: (409, "{error}"),
    crud.NotClaimable: (409, "This conversation is resolved or another staff member has taken it over."),
    crud.NotYourConversation: (409, "Take the conversation over first; a colleague may already have it."),
    crud.StaffNotFound: (404, "No staff account has this id."),
    crud.EmailTaken: (409, "Another account already uses this email."),
    crud.LastAdmin: (409, "At least one active admin must remain."),
    crud.CannedReplyNotFound: (404, "No canned reply has this id."),
    crud.TitleTaken: (409, "Another canned reply already has this title."),
    crud.WebhookNotFound: (404, "No webhook has this id."),
    crud.GapNotFound: (404, "No question the bot could not answer and a teammate did has this id."),
    crud.GapDecided: (409, "Someone already made a snippet of this answer or dismissed it."),
    crud.RunNotFound: (404, "No retraining run {error}."),
    crud.RunAlreadyActive: (409, "A retraining run is already going ({error})."),
    crud.RunNotResumable: (409, "{error}"),
    AdapterNotFound: (404, "No adapter version {error}."),
    IdentityRefused: (403, "The signed identity was refused."),
    IdentityExpired: (403, "The signed identity has expired; reload the page for a fresh one."),
    AdapterLoadFailed: (503, "{error}"),
}


def as_api_error(error: Exception) -> ApiError:
    """A typed error of the store, the adapter store or vLLM as the API reports it (ERROR_STATUS)."""
    if isinstance(error, ApiError):
        return error
    for kind in type(error).__mro__:
        if kind in ERROR_STATUS:
            status, message = ERROR_STATUS[kind]
            return ApiError(status, getattr(error, "code", "error"), message.format(error=error))
    raise error


# What a console page catches to show an error on the page itself instead of the API's error shape.
REPORTED = (ApiError, *ERROR_STATUS)

# What a saturated app tells clients to wait before trying again: long enough for a burst to drain.
BUSY_RETRY_AFTER_S = 5


def busy_response() -> JSONResponse:
    """503 with Retry-After: the request did nothing and may be sent again as it is."""
    response = error_response(
        503, "busy", f"We are very busy right now. Please try again in {BUSY_RETRY_AFTER_S} seconds."
    )
    response.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S)
    return response


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
               429: "rate_limited"}  # fmt: skip


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message)

    for kind in ERROR_STATUS:
        app.add_exception_handler(kind, _typed_error)

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(OperationalError)
    async def _database(_: Request, error: Exception) -> JSONResponse:
        if store_busy(error):
            logger.warning("database saturated, answered 503: %s", error)
            return busy_response()
        if store_full(error):
            # Nothing was stored; the widget keeps the text and sends it again after Retry-After.
            logger.error("the database's disk is full, answered 503: %s", error)
            response = error_response(503, "storage_full", "We cannot take messages right now; please try again soon.")
            response.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S * 6)
            return response
        logger.error("database error", exc_info=error)
        return error_response(500, "internal_error", "The request failed on our side.")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(problem.get("type") == "json_invalid" for problem in problems):
            return error_response(400, "malformed_json", "The request body is not valid JSON.")
        details = [
            {"field": ".".join(str(part) for part in problem.get("loc", ())), "problem": problem.get("msg", "")}
            for problem in problems
        ]
        if any(isinstance(problem.get("ctx", {}).get("error"), InvalidText) for problem in problems):
            return error_response(422, InvalidText.code, "The text holds characters that cannot be stored.", details)
        return error_response(422, "invalid_request", "The request is not in the expected shape.", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "error")
        return error_response(error.status_code, code, str(error.detail))

    @app.exception_handler(UnicodeEncodeError)
    async def _unstorable(_: Request, error: UnicodeEncodeError) -> JSONResponse:
        # Fields checked as `PlainText` never get here; this keeps any other field from failing with a 500.
        logger.warning("refused text the database cannot encode: %s", error.reason)
        return error_response(422, InvalidText.code, "The request holds text that is not valid Unicode.")

    @app.exception_handler(UnicodeDecodeError)
    async def _encoding(_: Request, error: UnicodeDecodeError) -> JSONResponse:
        return error_response(400, "invalid_encoding", "The request body is not UTF-8 text.")


async def _typed_error(_: Request, error: Exception) -> JSONResponse:
    reported = as_api_error(error)
    return error_response(reported.status, reported.code, reported.message)
