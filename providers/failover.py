"""One attempt at sending a message: providers in order, within their rate limits, failing over
on transient errors. Knows nothing of the database: it reports what happened."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.core.mail.message import EmailMessage

from infra.metrics import SEND_SECONDS
from providers import circuit, ratelimit
from providers.errors import ProviderError
from providers.selection import STALE, providers_in_order


@dataclass(frozen=True)
class FailedTry:
    provider: str
    error: ProviderError


@dataclass
class Outcome:
    provider: str = ""  # who accepted the message, if anyone did
    message_id: str = ""
    failed: list[FailedTry] = field(default_factory=list)  # failed tries, in order
    # Nothing was tried: its rate-limit slot is this many seconds off.
    defer_seconds: float | None = None

    @property
    def sent(self) -> bool:
        return bool(self.provider)

    @property
    def permanent(self) -> bool:
        return bool(self.failed) and self.failed[-1].error.permanent


# One rate-limited send at a time per provider in this process: sends from several threads would wait
# on each other (the GIL) after their slots, and bunch up at the provider.
_rate_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def _send_in_slot(provider, message: EmailMessage, ticket: str, outcome: Outcome) -> float | None:
    """Sends at the provider's next rate-limit slot, setting outcome.message_id; returns None, or the
    seconds to the slot when it is further off than MAIL_RATE_MAX_WAIT (then nothing is sent).
    Raises ProviderError."""
    provider.connect()  # before the slot: the send goes the moment the slot comes
    lock = _rate_locks[provider.name]
    if not lock.acquire(timeout=settings.MAIL_RATE_MAX_WAIT):
        return settings.MAIL_RATE_MAX_WAIT  # other threads hold this provider's turn: come back later
    try:
        wait = ratelimit.reserve(
            provider.name,
            rate=provider.config.rate_limit,
            burst=provider.config.burst,
            max_wait=settings.MAIL_RATE_MAX_WAIT,
            ticket=ticket,
        )
        if wait > settings.MAIL_RATE_MAX_WAIT:
            return wait
        time.sleep(wait)
        with SEND_SECONDS.labels(provider.name).time():
            outcome.message_id = provider.send(message)
    finally:
        lock.release()
    return None


def send(message: EmailMessage, *, ticket: str, permits: dict | None = None) -> Outcome:
    """Sends `message` (`ticket`, the email's id, holds its rate-limit slot across a hand-back).

    `permits`, shared by the sends of one batch, saves asking Redis again about a closed breaker."""
    outcome = Outcome()
    for provider, permit in providers_in_order(permits if permits is not None else {}):
        try:
            if provider.config.rate_limit:
                wait = _send_in_slot(provider, message, ticket, outcome)
                if wait is not None:
                    # Its slot is far off: hand the email back until then rather than hold a worker.
                    outcome.defer_seconds = wait
                    return outcome
            else:
                with SEND_SECONDS.labels(provider.name).time():
                    outcome.message_id = provider.send(message)
        except ProviderError as error:
            outcome.failed.append(FailedTry(provider.name, error))
            if error.permanent:
                return outcome  # the message itself is refused: another provider would refuse it too
            circuit.record_failure(provider.name)
            if permits is not None:
                permits[provider.name] = STALE  # the rest of the batch asks the breaker again
            continue
        circuit.record_success(provider.name, permit)
        outcome.provider = provider.name
        return outcome
    if not outcome.failed:
        # Every breaker is open: a failed attempt like any other, so a long outage still ends in FAILED.
        error = ProviderError("no provider available: every circuit breaker is open", permanent=False)
        outcome.failed.append(FailedTry("", error))
    return outcome
