"""Webhook delivery: claim the outbox's due messages, POST each to its webhook signed per Standard Webhooks, and
record every attempt and outcome.

A message is claimed with a lease (no other worker takes it while the lease holds) and its outcome is written
only while that claim still holds, so a worker that dies mid-delivery loses nothing: once the lease is over
another worker delivers the message again, with the same `webhook-id`, which receivers use to drop a repeat.
The schedule lives in the rows (next_attempt_at), never in the broker. Times that workers compare come from
PostgreSQL's clock."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection
from standardwebhooks import Webhook as Signer

from emails.models import Webhook, WebhookAttempt, WebhookMessage
from emails.services.webhook_outbox import opened_payload
from infra import metrics, safe_http
from infra.encryption import UndecryptableError, open_text

log = logging.getLogger(__name__)

# After the attempt numbered i (1-based) fails, the next one is RETRY_SCHEDULE[i - 1] seconds later: Standard
# Webhooks' schedule (immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), about a day in all. The
# message fails after the last.
RETRY_SCHEDULE = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
TIMEOUT_SECONDS = 10  # the contract's: no answer in 10 s is a failed attempt
# A claim's lease: above the longest a claimed message can take (its start is bounded below, then TIMEOUT).
LEASE_SECONDS = 60
# Deliveries in flight per worker process. Most receivers answer in milliseconds, but one slow one must not
# stall the others behind it.
THREADS = 4
CLAIM_SIZE = 4 * THREADS
# One task drains a burst claim after claim, for at most this long: other tasks (sends) wait for its process.
DRAIN_SECONDS = 20
# Writes stop this long before the lease runs out (by this host's monotonic clock).
LEASE_MARGIN_SECONDS = 2
DATABASE_RETRY_DELAYS = (0.1, 0.25, 0.5, 1, 2)

Status = WebhookMessage.Status
USER_AGENT = "mailservice"


def _never() -> float | None:
    return None


def webhooks_deliver_due(
    *, limit: int = CLAIM_SIZE, shutdown_deadline: Callable[[], float | None] = _never
) -> dict[str, int]:
    """Delivers due messages, claim after claim while a claim comes back full (a burst), for at most
    DRAIN_SECONDS. `shutdown_deadline` (see infra.worker_shutdown): once it is set no claim is made and no
    delivery starts; those in flight finish. Returns how many messages had each outcome (recorded ones)."""
    started = time.monotonic()
    totals: dict[str, int] = {}
    while shutdown_deadline() is None:
        claimed_at = time.monotonic()  # PostgreSQL starts the lease after this
        messages = _claim(limit)
        if not messages:
            break
        for outcome, count in _deliver(messages, claimed_at, shutdown_deadline).items():
            totals[outcome] = totals.get(outcome, 0) + count
        if len(messages) < limit or time.monotonic() - started > DRAIN_SECONDS:
            break
    return totals


@dataclass
class _Claimed:
    id: object
    webhook_id: object
    url: str
    secret: str  # as stored, and the payload too: opened by the attempt, so that one no key opens fails alone
    active: bool
    payload: dict
    attempts: int
    lease_until: datetime


_M = WebhookMessage._meta.db_table
_W = Webhook._meta.db_table
_A = WebhookAttempt._meta.db_table


def _claim(limit: int) -> list[_Claimed]:
    # One statement: rows others hold are skipped, not waited for; the lease is PostgreSQL's clock.
    with connection.cursor() as cursor:
        cursor.execute(
            # A claim counts as the attempt it starts: one whose worker died, or hung past the lease, is not
            # claimed again for ever, and a message that keeps doing that fails after MAX_ATTEMPTS claims.
            f"""WITH given_up AS (
                    UPDATE {_M} SET status = %s, lease_until = NULL
                     WHERE status = %s AND next_attempt_at <= statement_timestamp() AND attempts >= %s
                       AND lease_until < statement_timestamp()
                )
                UPDATE {_M} AS m
                   SET lease_until = statement_timestamp() + %s * interval '1 second', attempts = m.attempts + 1
                  FROM {_W} AS w
                 WHERE w.id = m.webhook_id AND m.id IN (
                       SELECT id FROM {_M}
                        WHERE status = %s AND next_attempt_at <= statement_timestamp() AND attempts < %s
                          AND (lease_until IS NULL OR lease_until < statement_timestamp())
                        ORDER BY next_attempt_at
                        LIMIT %s
                          FOR UPDATE SKIP LOCKED)
             RETURNING m.id, m.webhook_id, w.url, w.secret, w.active, m.payload, m.attempts, m.lease_until""",  # noqa: S608 - ours
            [Status.FAILED, Status.PENDING, MAX_ATTEMPTS, LEASE_SECONDS, Status.PENDING, MAX_ATTEMPTS, limit],
        )
        rows = cursor.fetchall()
    return [
        _Claimed(id=r[0], webhook_id=r[1], url=r[2], secret=r[3], active=r[4],
                 payload=r[5] if isinstance(r[5], dict) else json.loads(r[5]), attempts=r[6], lease_until=r[7])
        for r in rows
    ]  # fmt: skip


@dataclass
class _Result:
    message: _Claimed
    outcome: str  # delivered, retry, failed, disabled
    at: datetime | None = None  # None: no attempt was made
    answer: safe_http.Answer | None = None
    duration_ms: int = 0
    retry_in: float | None = None


def _deliver(messages: list[_Claimed], claimed_at: float, shutdown_deadline: Callable[[], float | None]) -> dict:
    # An attempt starts only while it can end, and its outcome be written, inside the lease.
    starts_until = claimed_at + LEASE_SECONDS - TIMEOUT_SECONDS - 2 * LEASE_MARGIN_SECONDS

    gone: set = set()  # webhooks that answered 410 during this batch: their other messages are not sent

    def attempt(message: _Claimed) -> _Result | None:
        if not message.active or message.webhook_id in gone:  # turned off after the message was written
            return _Result(message, Status.DISABLED)
        if time.monotonic() > starts_until or shutdown_deadline() is not None:
            return None  # handed back below, for the next claim
        try:
            result = _attempt(message)
            if result.outcome == Status.DISABLED:
                gone.add(message.webhook_id)
            return result
        except UndecryptableError as exc:  # a key missing from MAIL_ENCRYPTION_KEYS: retried on the schedule
            log.error("webhook message %s: %s", message.id, exc)
            return _unattempted(message, "internal error: its payload or secret cannot be decrypted")
        except Exception as exc:  # a bug must still end in a recorded attempt, not a lease left to expire
            log.error("webhook message %s: unexpected %s while delivering", message.id, type(exc).__name__)
            return _unattempted(message, f"internal error: {type(exc).__name__}")

    results = list(_threads().map(attempt, messages))
    done = [r for r in results if r is not None]
    handed_back = [m for m, r in zip(messages, results, strict=True) if r is None]
    recorded = _when_database_answers(lambda: _record(done, handed_back), until=claimed_at + LEASE_SECONDS)
    if recorded is None:
        log.warning("webhooks: outcomes of messages %s not recorded; delivered again after the lease",
                    " ".join(str(r.message.id) for r in done))  # fmt: skip
        return {}
    counts: dict[str, int] = {}
    for result in done:
        message = result.message
        if str(message.id) not in recorded:
            log.warning("webhook message %s: lease lost before its outcome was recorded", message.id)
            continue
        metrics.WEBHOOK_DELIVERIES.labels(result.outcome).inc()
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return counts


def _unattempted(message: _Claimed, error: str) -> _Result:
    """An attempt that failed before its request was sent, recorded as one: retried on the schedule."""
    answer = safe_http.Answer(error=error)
    outcome, retry_in = _next(message.attempts, answer)
    return _Result(message, outcome, at=datetime.now(UTC), answer=answer, retry_in=retry_in)


def _attempt(message: _Claimed) -> _Result:
    body = json.dumps(opened_payload(message.payload)).encode()
    msg_id = WebhookMessage.header_id(message.id)
    at = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Signer(open_text(message.secret)).sign(msg_id, at, body.decode()),  # str: 1.x signs it
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    started = time.monotonic()
    answer = safe_http.post(
        message.url, body, headers, allow_private=settings.MAIL_WEBHOOK_ALLOW_PRIVATE, timeout=TIMEOUT_SECONDS
    )
    duration_ms = int((time.monotonic() - started) * 1000)
    attempts = message.attempts  # this one included: its claim counted it
    outcome, retry_in = _next(attempts, answer)
    log.info("webhook message %s (webhook %s) attempt %d: %s -> %s", message.id, message.webhook_id, attempts,
             answer.status or answer.error.partition(":")[0], outcome)  # fmt: skip
    return _Result(message, outcome, at=at, answer=answer, duration_ms=duration_ms, retry_in=retry_in)


def _next(attempts: int, answer: safe_http.Answer) -> tuple[str, float | None]:
    """The outcome of the attempt numbered `attempts`, and for a retry, the seconds until the next one."""
    if answer.status is not None and 200 <= answer.status < 300:
        return Status.DELIVERED, None
    if answer.status == 410:
        return Status.DISABLED, None
    if attempts >= MAX_ATTEMPTS:
        return Status.FAILED, None
    return "retry", RETRY_SCHEDULE[attempts - 1]


_pool: ThreadPoolExecutor | None = None


def _threads() -> ThreadPoolExecutor:
    """This process's deliverers: only the HTTP calls run there; the database is the task thread's."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="webhook")
    return _pool


def _record(done: list[_Result], handed_back: list[_Claimed]) -> set[str]:
    """In one statement: each attempt made, each outcome (only while its claim holds), a 410's webhook turned
    off with its other pending messages, and the claims not attempted given back. Returns the ids whose outcome
    was written."""
    values, params = [], []
    for r in done:
        m, answer = r.message, r.answer
        values.append("(%s::uuid, %s::timestamptz, %s, %s::timestamptz, %s::int, %s, %s::int, %s::float8)")
        params += [str(m.id), m.lease_until, r.outcome, r.at, answer.status if answer else None,
                   answer.error[:300] if answer else "", r.duration_ms, r.retry_in]  # fmt: skip
    if not values:
        values.append("(NULL::uuid, NULL::timestamptz, NULL, NULL::timestamptz, NULL::int, NULL, 0, NULL::float8)")
    back = [str(m.id) for m in handed_back]
    back_leases = [m.lease_until for m in handed_back]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH v (id, lease, outcome, at, status_code, error, duration_ms, retry_in) AS (
                    VALUES {", ".join(values)}
                ),
                done AS (
                    UPDATE {_M} AS m
                       SET status = CASE v.outcome WHEN 'retry' THEN 'pending' ELSE v.outcome END,
                           attempts = m.attempts - (v.at IS NULL)::int,  -- its claim counted one
                           next_attempt_at = COALESCE(statement_timestamp() + v.retry_in * interval '1 second',
                                                      m.next_attempt_at),
                           delivered_at = CASE WHEN v.outcome = 'delivered' THEN v.at ELSE m.delivered_at END,
                           lease_until = NULL
                      FROM v
                     WHERE m.id = v.id AND m.status = 'pending' AND m.lease_until = v.lease
                 RETURNING m.id, m.webhook_id, v.outcome
                ),
                tried AS (
                    INSERT INTO {_A} (message_id, at, status_code, error, duration_ms)
                    SELECT v.id, v.at, v.status_code, v.error, v.duration_ms
                      FROM v JOIN {_M} AS m ON m.id = v.id
                     WHERE v.at IS NOT NULL
                ),
                gone AS (
                    SELECT DISTINCT m.webhook_id FROM v JOIN {_M} AS m ON m.id = v.id WHERE v.status_code = 410
                ),
                off AS (
                    UPDATE {_W} AS w SET active = FALSE, disabled_reason = %s
                     WHERE w.id IN (SELECT webhook_id FROM gone) AND w.active
                ),
                rest AS (
                    UPDATE {_M} AS m SET status = 'disabled', lease_until = NULL
                     WHERE m.webhook_id IN (SELECT webhook_id FROM gone) AND m.status = 'pending'
                       AND m.id NOT IN (SELECT id FROM v WHERE id IS NOT NULL) AND m.id <> ALL(%s::uuid[])
                ),
                back AS (
                    UPDATE {_M} AS m SET lease_until = NULL, attempts = m.attempts - 1
                      FROM unnest(%s::uuid[], %s::timestamptz[]) AS b (id, lease)
                     WHERE m.id = b.id AND m.status = 'pending' AND m.lease_until = b.lease
                )
                SELECT id FROM done""",  # noqa: S608 - table names and placeholders are ours
            [*params, "The receiver answered 410 Gone.", back, back, back_leases],
        )
        return {str(row[0]) for row in cursor.fetchall()}


def _when_database_answers(write: Callable[[], set[str]], *, until: float) -> set[str] | None:
    """`write()`, again with backoff while the database is unreachable, until the lease is nearly over; None
    when it never answered. A message deleted meanwhile (its webhook deleted) fails the attempts' foreign key:
    written again, it is no longer seen."""
    failures = 0
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError, IntegrityError) as exc:
            if not isinstance(exc, IntegrityError):
                connection.close()  # broken: the next try reconnects
            delay = DATABASE_RETRY_DELAYS[min(failures, len(DATABASE_RETRY_DELAYS) - 1)]
            failures += 1
            if time.monotonic() + delay > until - LEASE_MARGIN_SECONDS:
                log.warning("webhooks: recording failed (%s); given up", type(exc).__name__)
                return None
            time.sleep(delay)
