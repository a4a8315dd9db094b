"""Sending: claim, send through the providers, record each outcome."""

from __future__ import annotations

import base64
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import timedelta
from email.utils import parseaddr
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from emails import queue
from emails.models import Email, EmailEvent, Suppression
from mailservice import metrics
from providers import failover
from providers.errors import ProviderError
from providers.outbox import ID_HEADER

log = logging.getLogger(__name__)

Status = Email.Status
# How early a task may arrive before its row is due (clock skew between worker hosts).
DUE_TOLERANCE = timedelta(seconds=1)
# Recording an outcome survives a database blip of a few seconds (None: give up, re-raise).
FINISH_RETRY_DELAYS = (0.5, 1, 2, 4, None)


def email_send(email_id: UUID | str) -> None:
    """One attempt at one email (see emails_send)."""
    emails_send([email_id])


def emails_send(email_ids: list[UUID | str]) -> None:
    """One attempt at each email: claim the rows, send each through the providers (failing over),
    record the outcomes. Claims, suppressions and sends are read and written for all at once.

    Safe to call twice for the same ids: only one caller wins each claim.
    """
    emails = _claim(email_ids)  # others are someone else's, not due yet, or final
    if not emails:
        return
    recipients = {address for email in emails for address in email.recipients}
    suppressed = set(Suppression.objects.filter(address__in=recipients).values_list("address", flat=True))
    permits: dict = {}  # closed breakers, asked once per batch
    to_send = []
    for email in emails:
        left_out = suppressed.intersection(email.recipients)
        events = [_event(EmailEvent.Type.SUPPRESSED, detail=_listed(left_out))] if left_out else []
        if left_out and left_out >= set(email.recipients):
            if _finish(email, events, status=Status.FAILED, last_error="suppressed"):
                metrics.FAILED.labels("").inc()
            log.info("email %s not sent: every recipient is suppressed", email.id)
        else:
            to_send.append((email, left_out, events))
    # Past this, a send not started yet hands its email back: the chunk must end well inside its lease.
    deadline = time.monotonic() + settings.MAIL_LEASE_SECONDS / 2
    futures = {_send_pool().submit(_attempt, email, left_out, permits, deadline): (email, events)
               for email, left_out, events in to_send}  # fmt: skip
    sent = []
    try:
        for future in as_completed(futures):
            email, events = futures[future]
            outcome = future.result()
            events += [_event(EmailEvent.Type.RETRY, t.provider, t.error.reason) for t in outcome.failed]
            for failed in outcome.failed:
                log.info("email %s: %s failed (%s)", email.id, failed.provider, failed.error.kind)
            if outcome.sent:
                sent.append((email, outcome, events))  # recorded together, below
            elif outcome.permanent or (outcome.failed and not email.can_retry()):
                _record_failed(email, outcome, events)
            elif outcome.failed:
                _record_retry(email, outcome, events)
            else:
                _defer(email, outcome.defer_seconds or 0)
    finally:
        # Whatever went wrong above (a time limit, the database), what was delivered is recorded:
        # left PROCESSING, it would be sent again once its lease expired.
        for future in futures:
            future.cancel()  # not started: those emails stay claimed until the sweep takes them back
        _record_sent(sent)


_pool: ThreadPoolExecutor | None = None


def _send_pool() -> ThreadPoolExecutor:
    """This process's senders: MAIL_SEND_THREADS provider calls overlap while one waits on the network.
    Only the provider calls run there; the database is read and written by the task's own thread."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(settings.MAIL_SEND_THREADS, thread_name_prefix="send")
    return _pool


def _attempt(email: Email, left_out: set[str], permits: dict, deadline: float) -> failover.Outcome:
    if time.monotonic() > deadline:
        return failover.Outcome(defer_seconds=0)  # the chunk ran long: back to PENDING, attempt not counted
    try:
        message = build_message(email, leave_out=left_out)
        return failover.send(message, ticket=str(email.id), permits=permits)
    except Exception as exc:
        # A bug or an unexpected failure must still end in an outcome, not a lease left to expire.
        # No message in the log: it may quote content.
        log.error("email %s: unexpected %s while sending", email.id, type(exc).__name__)
        error = ProviderError(f"internal error: {type(exc).__name__}", permanent=False)
        return failover.Outcome(failed=[failover.FailedTry("", error)])


# What sending reads: the claim returns only these (the rest of a row is a fifth of the claim's cost).
SENDING_FIELDS = ("id", "from_email", "to", "cc", "bcc", "reply_to", "recipients", "subject", "text", "html",
                  "headers", "attachments", "attempts", "lease_until")  # fmt: skip


def _claim(email_ids: list[UUID | str]) -> list[Email]:
    now = timezone.now()
    lease = now + timedelta(seconds=settings.MAIL_LEASE_SECONDS)
    # One statement: the conditional update is the lock, RETURNING saves a second query.
    # `status || ''` keeps the planner on the primary key: matched against the partial index of
    # PENDING rows, with statistics a bulk insert has not reached yet, it would scan every pending row.
    return list(
        Email.objects.raw(
            f"""UPDATE {Email._meta.db_table}
                   SET status = %s, attempts = attempts + 1, lease_until = %s, updated_at = %s
                 WHERE id = ANY(%s::uuid[]) AND status || '' = %s AND next_attempt_at <= %s
             RETURNING {", ".join(connection.ops.quote_name(f) for f in SENDING_FIELDS)}""",  # noqa: S608 - ours
            [Status.PROCESSING, lease, now, [str(i) for i in email_ids], Status.PENDING, now + DUE_TOLERANCE],
        )
    )


def _listed(addresses: set[str]) -> str:
    return ", ".join(sorted(addresses))


def build_message(email: Email, *, leave_out: set[str] = frozenset()) -> EmailMultiAlternatives:
    def keep(addresses: list[str]) -> list[str]:
        return [a for a in addresses if parseaddr(a)[1].lower() not in leave_out]

    domain = parseaddr(email.from_email)[1].rpartition("@")[2]
    headers = {
        # The same Message-ID on every attempt lets receivers drop a duplicate delivery.
        "Message-ID": f"<{email.id}@{domain}>",
        **email.headers,
        ID_HEADER: str(email.id),
    }
    message = EmailMultiAlternatives(
        subject=email.subject,
        body=email.text or email.html,
        from_email=email.from_email,
        to=keep(email.to),
        cc=keep(email.cc),
        bcc=keep(email.bcc),
        reply_to=email.reply_to,
        headers=headers,
    )
    if email.text and email.html:
        message.attach_alternative(email.html, "text/html")
    elif email.html:
        message.content_subtype = "html"
    for attachment in email.attachments:
        message.attach(attachment["filename"], base64.b64decode(attachment["content"]), attachment["content_type"])
    return message


def _event(type: str, provider: str = "", detail: str = "") -> EmailEvent:
    return EmailEvent(type=type, provider=provider, detail=detail)


def _finish(email: Email, events: list[EmailEvent], **fields: Any) -> bool:
    """Writes one attempt's outcome if this worker's claim still holds; False when it was taken back."""
    now = timezone.now()

    def write() -> int:
        with transaction.atomic():
            updated = Email.objects.filter(id=email.id, status=Status.PROCESSING, lease_until=email.lease_until).update(
                lease_until=None, updated_at=now, **fields
            )
            if updated:
                for event in events:
                    event.email_id, event.at = email.id, now
                EmailEvent.objects.bulk_create(events)
        return updated

    if not _retrying_db_blips(write, email_id=email.id):
        log.warning("email %s: lease lost before the outcome was recorded; outcome dropped", email.id)
        return False
    return True


def _record_sent(sent: list[tuple[Email, failover.Outcome, list[EmailEvent]]]) -> None:
    """Marks the sent emails SENT, each only while its claim still holds, and stores their events (the
    tries before, then "sent"): one statement for the whole chunk."""
    if not sent:
        return
    now = timezone.now()
    emails, events = [], []
    for email, outcome, email_events in sent:
        # Capped to the columns' sizes: one over-long id (an ESP's per-recipient ids) must not fail the chunk.
        emails += [str(email.id), outcome.provider[:100], outcome.message_id[:1000], email.lease_until]
        sent_event = _event(EmailEvent.Type.SENT, outcome.provider, outcome.message_id)
        for event in [*email_events, sent_event]:
            events += [str(email.id), event.type, event.provider[:100], event.detail, len(events)]
    email_rows = ", ".join(["(%s::uuid, %s, %s, %s::timestamptz)"] * len(sent))
    event_rows = ", ".join(["(%s::uuid, %s, %s, %s, %s)"] * (len(events) // 5))

    def write() -> set[str]:
        with connection.cursor() as cursor:
            cursor.execute(
                f"""WITH sent AS (
                        UPDATE {Email._meta.db_table} AS e
                           SET status = %s, provider = v.provider, provider_message_id = v.message_id,
                               sent_at = %s, last_error = '', lease_until = NULL, updated_at = %s
                          FROM (VALUES {email_rows}) AS v (id, provider, message_id, lease)
                         WHERE e.id = v.id AND e.status = %s AND e.lease_until = v.lease
                     RETURNING e.id
                    ), events AS (
                        INSERT INTO {EmailEvent._meta.db_table} (email_id, type, provider, detail, at)
                        SELECT v.email_id, v.type, v.provider, v.detail, %s
                          FROM (VALUES {event_rows}) AS v (email_id, type, provider, detail, n)
                          JOIN sent ON sent.id = v.email_id
                         ORDER BY v.n  -- ids in this order: the timeline sorts by (at, id)
                    )
                    SELECT id FROM sent""",  # noqa: S608 - table names and placeholders are ours
                [Status.SENT, now, now, *emails, Status.PROCESSING, now, *events],
            )
            return {str(row[0]) for row in cursor.fetchall()}

    recorded = _retrying_db_blips(write, email_id=sent[0][0].id)
    for email, outcome, _ in sent:
        if str(email.id) in recorded:
            metrics.SENT.labels(outcome.provider).inc()
        else:
            log.warning("email %s: lease lost before the outcome was recorded; outcome dropped", email.id)
    log.info("sent %d email(s): %s", len(recorded), " ".join(sorted(recorded)))


def _retrying_db_blips(write: Callable[[], Any], *, email_id: UUID) -> Any:
    """Runs `write`, again through a database blip of a few seconds: a message already out must not
    become a resend because its outcome could not be recorded."""
    for delay in FINISH_RETRY_DELAYS:
        try:
            return write()
        except (OperationalError, InterfaceError):
            if delay is None:
                raise
            log.warning("email %s: database unavailable while recording the outcome; retrying", email_id)
            connection.close()
            time.sleep(delay)
    return None


def _record_failed(email: Email, outcome: failover.Outcome, events: list[EmailEvent]) -> None:
    last = outcome.failed[-1]
    reason = (
        last.error.reason if last.error.permanent else f"{last.error.reason} (gave up after {email.attempts} attempts)"
    )
    events[-1] = _event(EmailEvent.Type.FAILED, last.provider, reason)
    if _finish(email, events, status=Status.FAILED, provider=last.provider, last_error=reason):
        metrics.FAILED.labels(last.provider).inc()
    log.warning("email %s failed via %s (%s, attempt %d)", email.id, last.provider, last.error.kind, email.attempts)


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt: doubling from MAIL_RETRY_BACKOFF, with jitter, capped."""
    delay = settings.MAIL_RETRY_BACKOFF * 2 ** (attempts - 1) * random.uniform(0.8, 1.2)  # noqa: S311
    return min(delay, settings.MAIL_RETRY_BACKOFF_MAX)


def _record_retry(email: Email, outcome: failover.Outcome, events: list[EmailEvent]) -> None:
    last = outcome.failed[-1]
    delay = retry_delay(email.attempts)
    retried = _finish(
        email,
        events,
        status=Status.PENDING,
        provider=last.provider,
        last_error=last.error.reason,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
    )
    if retried and delay <= settings.MAIL_SWEEP_INTERVAL:
        queue.publish([email.id], countdown=delay)  # later ones: the sweep publishes them as they come due
    log.info("email %s will be retried in %.1fs (attempt %d)", email.id, delay, email.attempts)


def _defer(email: Email, seconds: float) -> None:
    """Nothing was tried (rate limit, every breaker open): back to PENDING, the attempt not counted."""
    if (
        _finish(
            email,
            [],
            status=Status.PENDING,
            attempts=F("attempts") - 1,
            next_attempt_at=timezone.now() + timedelta(seconds=seconds),
        )
        and seconds <= settings.MAIL_SWEEP_INTERVAL
    ):
        queue.publish([email.id], countdown=seconds)
