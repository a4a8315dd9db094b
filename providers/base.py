"""A provider: one configured Django email backend, its connection kept open across sends."""

from __future__ import annotations

import contextlib
import time

import requests
from django.core.mail import get_connection
from django.core.mail.message import EmailMessage

from providers.errors import ProviderError, classify
from providers.registry import ProviderConfig

# Reopen a connection idle for longer than this: SMTP servers drop idle clients (often after 60 s),
# and a send on a dropped connection would fail the attempt.
IDLE_RECONNECT_SECONDS = 30


class Provider:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name
        self._backend = None
        self._last_used = 0.0
        self.current_weight = 0.0  # smooth weighted round-robin state (selection.py)

    def connect(self) -> None:
        """Opens (or keeps) the connection, so that a rate-limited send goes the moment its slot comes.
        Raises ProviderError."""
        try:
            self._connection()
        except Exception as exc:
            self.close()
            raise classify(exc) from exc

    def send(self, message: EmailMessage) -> str:
        """Sends one message; returns the provider's message id; raises ProviderError."""
        _track_if_offered(message, self.config.offers_tracking)
        try:
            backend = self._connection()
            sent = backend.send_messages([message])
        except Exception as exc:
            self.close()  # the connection's state is unknown: start afresh next time
            raise classify(exc) from exc
        self._last_used = time.monotonic()
        if not sent:
            self.close()
            raise ProviderError("the provider accepted no message", permanent=False)
        return _message_id(message)

    def close(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            # Closing a broken connection may fail too; it is discarded either way.
            with contextlib.suppress(Exception):
                backend.close()

    def _connection(self):
        if self._backend is not None and time.monotonic() - self._last_used > IDLE_RECONNECT_SECONDS:
            self.close()
        if self._backend is None:
            backend = get_connection(self.config.backend, fail_silently=False, **self.config.options)
            backend.open()
            read_environment_once(backend)
            self._backend = backend
        return self._backend


def read_environment_once(backend) -> None:
    """An HTTP API's session (anymail's backends keep a requests.Session per connection, its keep-alive
    connections pooled) reads the environment's proxy and CA-bundle variables on every request: a fifth of an
    HTTP send's CPU. They are read once here, for the backend's API URL, and kept on the session; what they say
    is the same (the environment does not change under a running process). The session then no longer looks
    up ~/.netrc either, whose credentials would have replaced the ESP's own auth header."""
    session, url = getattr(backend, "session", None), getattr(backend, "api_url", None)
    if not isinstance(session, requests.Session) or not isinstance(url, str) or not session.trust_env:
        return
    found = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(found["proxies"])
    session.verify = found["verify"]
    session.trust_env = False


# Tracking an email asks for (emails.services.sending.build_message), as anymail reads it from a message.
TRACKING_ATTRIBUTES = ("track_opens", "track_clicks")


def _track_if_offered(message: EmailMessage, offered: bool) -> None:
    """Gives `message` the tracking it asks for when the backend takes it, and takes it away when not: one message
    goes to each provider of a failover in turn."""
    asked = getattr(message, "tracking", {})
    for name in TRACKING_ATTRIBUTES:
        if offered and asked.get(name) is not None:
            setattr(message, name, asked[name])
        elif hasattr(message, name):
            delattr(message, name)


def _message_id(message: EmailMessage) -> str:
    status = getattr(message, "anymail_status", None)  # set by anymail's backends
    if status is not None and status.message_id:
        # anymail gives a set when the ESP returned one id per recipient.
        ids = status.message_id if isinstance(status.message_id, set) else {status.message_id}
        return ",".join(sorted(str(i) for i in ids))
    return message.extra_headers.get("Message-ID", "")
