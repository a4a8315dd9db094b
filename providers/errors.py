"""One place that decides whether a provider's failure is worth retrying."""

from __future__ import annotations

import smtplib
import socket
import ssl

import requests
import urllib3
from anymail.exceptions import AnymailAPIError, AnymailInvalidAddress, AnymailRecipientsRefused


class ProviderError(Exception):
    """A send that failed. `permanent` failures are not retried; `reason` is stored as the email's last_error.

    `possibly_sent`: the connection failed after the message was handed over (the reply never came), so the
    provider may have taken it: a retry may deliver it twice."""

    def __init__(self, reason: str, *, permanent: bool, code: int | None = None, possibly_sent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.code = code
        self.possibly_sent = possibly_sent

    @property
    def kind(self) -> str:
        """A short label safe for logs: never the provider's text, which may quote addresses."""
        suffix = f" {self.code}" if self.code else ""
        sent = ", possibly sent" if self.possibly_sent else ""
        return ("permanent" if self.permanent else "transient") + suffix + sent


class MessageMaybeDelivered(smtplib.SMTPServerDisconnected):
    """The SMTP connection failed (closed, reset or timed out) after the whole message and its final "."
    went out, before the server's reply to it: the server may have queued the message."""


def _chain(exc: BaseException):
    """exc and the exceptions behind it, as a traceback shows them: __cause__ ("raise ... from"), else
    __context__ (raised while handling another: requests raises its ConnectionError so)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)


def _request_possibly_sent(exc: BaseException) -> bool:
    """Whether an HTTP API call failed after its request went out: the reply timed out (ReadTimeout), or
    the connection dropped while the reply was awaited (urllib3's ProtocolError, "Connection aborted.",
    e.g. RemoteDisconnected). A connection that never opened (refused, connect timeout) sent nothing."""
    for link in _chain(exc):
        if isinstance(link, requests.exceptions.ConnectTimeout):  # also a ConnectionError: check it first
            return False
        if isinstance(
            link,
            requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError | urllib3.exceptions.ProtocolError,
        ):
            return True
    return False


def _smtp_reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"SMTP {code} {text}".strip()


def classify(exc: BaseException) -> ProviderError:
    """Translate any exception raised while sending into a ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, MessageMaybeDelivered):
        return ProviderError(f"possibly sent, no reply to the message: {exc}", permanent=False, possibly_sent=True)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = list(exc.recipients.values())
        # All recipients deferred (4xx) is a temporary refusal; any 5xx is final.
        permanent = any(code >= 500 for code, _ in replies)
        code, message = max(replies, key=lambda reply: reply[0]) if replies else (None, b"")
        return ProviderError(f"recipients refused: {_smtp_reply(code or 0, message)}", permanent=permanent, code=code)
    if isinstance(exc, smtplib.SMTPResponseException):
        # SMTPDataError, SMTPSenderRefused, SMTPAuthenticationError, ...: 4xx try again, 5xx do not,
        # except authentication, which is the provider's configuration, not this email's fault.
        permanent = exc.smtp_code >= 500 and not isinstance(exc, smtplib.SMTPAuthenticationError)
        return ProviderError(_smtp_reply(exc.smtp_code, exc.smtp_error), permanent=permanent, code=exc.smtp_code)
    if isinstance(exc, AnymailRecipientsRefused | AnymailInvalidAddress):
        return ProviderError(str(exc), permanent=True)
    if isinstance(exc, AnymailAPIError):
        status = getattr(exc, "status_code", None)
        # No status (network error, timeout), 429 and 5xx are the provider's trouble: try again.
        permanent = status is not None and 400 <= status < 500 and status != 429
        if status is None and _request_possibly_sent(exc):
            return ProviderError(f"possibly sent, no reply to the request: {exc}", permanent=False, possibly_sent=True)
        return ProviderError(str(exc), permanent=permanent, code=status)
    if isinstance(exc, smtplib.SMTPException | OSError | socket.timeout | ssl.SSLError):
        return ProviderError(f"{type(exc).__name__}: {exc}", permanent=False)
    # Unknown failures are retried: attempts are bounded, and a bug is better retried than lost.
    return ProviderError(f"{type(exc).__name__}: {exc}", permanent=False)
