"""The errors the store's queries raise: one base class, each case with the code the API reports it under.

serving/errors.py maps them to HTTP statuses in one table; nothing here knows HTTP.
"""


class StoreError(Exception):
    """A query refused what it was asked; `code` names the case (the API's error code)."""

    code = "store_error"


class ConversationNotFound(StoreError):
    """No conversation has this id."""

    code = "conversation_not_found"


class ConversationAccessDenied(StoreError):
    """The token given does not open this conversation."""

    code = "invalid_token"


class MessageNotFound(StoreError):
    """No message with this id belongs to this conversation."""

    code = "message_not_found"


class NotABotMessage(StoreError):
    """Only the bot's replies can be rated."""

    code = "not_a_bot_message"


class RunAlreadyActive(StoreError):
    """Only one retraining run may be queued or running at a time."""

    code = "run_active"


class RunNotFound(StoreError):
    """No retraining run has this id."""

    code = "run_not_found"


class RunNotResumable(StoreError):
    """Only interrupted, failed or cancelled runs can be resumed, and only while no other run is going."""

    code = "not_resumable"


class StaffNotFound(StoreError):
    """No staff account has this id or email."""

    code = "staff_not_found"


class EmailTaken(StoreError):
    """Another staff account already signs in with this email."""

    code = "email_taken"


class LastAdmin(StoreError):
    """The change would leave no active admin to manage accounts."""

    code = "last_admin"


class NotClaimable(StoreError):
    """The conversation is resolved, or another staff member already has it."""

    code = "not_claimable"


class NotYourConversation(StoreError):
    """Only the staff member who took the conversation over may answer in it or hand it back."""

    code = "not_your_conversation"


class ReviewConflict(StoreError):
    """Someone else saved this review after the editor read it: theirs is kept and nothing of this edit is."""

    code = "review_conflict"

    def __init__(self, what: str, expected_version: int, current_version: int) -> None:
        super().__init__(
            f"{what} was changed by someone else while you edited it (you edited version {expected_version}, "
            f"it is now at version {current_version}); reload it and apply your change again"
        )
        self.expected_version = expected_version
        self.current_version = current_version


class NotACustomerMessage(StoreError):
    """Only customer messages carry an intent to relabel."""

    code = "not_a_customer_message"


class InvalidLabel(StoreError, ValueError):
    """A tag name or intent that is empty or longer than 64 characters."""

    code = "invalid_label"


class CannedReplyNotFound(StoreError):
    """No canned reply has this id."""

    code = "canned_reply_not_found"


class TitleTaken(StoreError):
    """Another canned reply already has this title."""

    code = "title_taken"


class WebhookNotFound(StoreError):
    """No webhook has this id."""

    code = "webhook_not_found"


class GapNotFound(StoreError):
    """No customer question with this id went unanswered by the bot and was then answered by a teammate."""

    code = "gap_not_found"


class GapDecided(StoreError):
    """An admin already made a snippet of this answered gap, or dismissed it."""

    code = "gap_decided"
