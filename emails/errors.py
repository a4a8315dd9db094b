"""What the accepting service refuses, in plain values: no door's protocol. Each door maps these to its own
answer in one place (the API's api_exception_handler, the SMTP door's smtp_reply(), the admin's resend
action). A database that cannot be reached raises its own errors (emails.exceptions.DATABASE_ERRORS), and no
render process emails.rendering.RenderUnavailable: the doors answer those as unavailable, not as refusals."""

from __future__ import annotations

from typing import Any

# The code of an InvalidFields naming a sender the API key may not use: SMTP answers it 5.7.1, not 5.6.0.
SENDER_NOT_ALLOWED = "sender_not_allowed"


class AcceptingError(Exception):
    """An email the accepting service refuses; its message says why."""


class InvalidFields(AcceptingError):
    """Fields refused, by their names in the API (`from`, not from_email), each with its messages:
    `{"template": ["No template named 'x'."]}`; a list's or an object's errors nest as dicts keyed by index
    or name. `code` sets one reason apart for the doors that answer it apart (SENDER_NOT_ALLOWED)."""

    def __init__(self, errors: dict[Any, list[str] | dict], *, code: str | None = None) -> None:
        super().__init__(errors)
        self.errors = errors
        self.code = code


class TooLarge(AcceptingError):
    """An email over MAIL_MAX_EMAIL_BYTES with its attachments; the message gives its size and the limit."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class IdempotencyConflict(AcceptingError):
    """An Idempotency-Key the API key used before with a different request."""

    message = "This Idempotency-Key was used with a different request."

    def __init__(self) -> None:
        super().__init__(self.message)
