"""Writes: accepting, sending, recovering and resending emails."""

from __future__ import annotations

import base64
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.template import Context, Engine, TemplateSyntaxError
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from emails import queue
from emails.exceptions import IdempotencyKeyReused, PayloadTooLarge
from emails.fields import attachment_size
from emails.models import ApiKey, Email, EmailEvent, IdempotencyKey, Suppression, Template
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
# Idempotency keys are kept at least 24 hours (the contract), then deleted by the sweep.
IDEMPOTENCY_KEEP = timedelta(hours=48)
# At most this many stranded rows are re-enqueued per sweep, and none while the queue holds more.
SWEEP_BATCH = 1000


# --- API keys ----------------------------------------------------------------------------


def api_key_create(*, name: str) -> tuple[ApiKey, str]:
    """Returns the stored key and the key itself, which is not stored and cannot be shown again."""
    key = ApiKey.generate()
    api_key = ApiKey.objects.create(name=name, key_hash=ApiKey.hash(key), prefix=key[:10])
    return api_key, key


# --- accepting ---------------------------------------------------------------------------


def _bare_addresses(*lists: list[str]) -> list[str]:
    return sorted({parseaddr(a)[1].lower() for addresses in lists for a in addresses})


# Text and subjects are not HTML: only the html part escapes what the context brings in.
_TEXT_ENGINE = Engine(autoescape=False)
_HTML_ENGINE = Engine(autoescape=True)


def template_render(*, template: Template, context: dict[str, Any]) -> dict[str, str]:
    """The template's subject, text and html rendered with `context`; raises ValidationError."""
    rendered = {}
    try:
        for part, engine in (("subject", _TEXT_ENGINE), ("text", _TEXT_ENGINE), ("html", _HTML_ENGINE)):
            source = getattr(template, part)
            compiled = engine.from_string(source)
            rendered[part] = compiled.render(Context(context, autoescape=engine.autoescape)) if source else ""
    except TemplateSyntaxError as exc:
        raise ValidationError({"template": [f"Template {template.name!r} does not render: {exc}"]}) from None
    except Exception as exc:  # a context value whose rendering fails (a broken __str__ cannot come from JSON)
        raise ValidationError({"context": [f"Template {template.name!r} does not render: {exc}"]}) from None
    rendered["subject"] = " ".join(rendered["subject"].split())  # a subject is one line
    return rendered


def _new_email(*, api_key: ApiKey | None, now: datetime, templates: dict[str, Template], **fields: Any) -> Email:
    """An unsaved Email from validated API fields: template rendered, size checked.

    Raises ValidationError (bad template or context) or PayloadTooLarge."""
    name, context = fields.pop("template", ""), fields.pop("context", None) or {}
    if name:
        if name not in templates:
            raise ValidationError({"template": [f"No template named {name!r}."]})
        rendered = template_render(template=templates[name], context=context)
        # What the request gives itself wins over the template.
        fields = {**{k: v for k, v in rendered.items() if v}, **{k: v for k, v in fields.items() if v}}
        if not fields.get("subject"):
            raise ValidationError({"subject": [f"Template {name!r} gives no subject, and the request neither."]})
        if not fields.get("text") and not fields.get("html"):
            raise ValidationError({"template": [f"Template {name!r} renders no text or html."]})
    attachments = fields.get("attachments") or []
    size = sum(len(fields.get(part, "").encode()) for part in ("text", "html")) + sum(map(attachment_size, attachments))
    if size > settings.MAIL_MAX_EMAIL_BYTES:
        limit = settings.MAIL_MAX_EMAIL_BYTES
        raise PayloadTooLarge(f"The email is {size} bytes with its attachments; at most {limit}.")
    to, cc, bcc = fields["to"], fields.get("cc") or [], fields.get("bcc") or []
    send_at = fields.get("send_at")
    return Email(
        api_key=api_key,
        recipients=_bare_addresses(to, cc, bcc),
        template=name,
        next_attempt_at=max(send_at or now, now),
        created_at=now,
        **fields,
    )


def email_create(*, api_key: ApiKey | None, **fields: Any) -> Email:
    """Stores a validated email as PENDING and enqueues it once the row is committed.

    `fields` are the API's: from_email, to, cc, bcc, reply_to, subject, text, html, headers, tags,
    metadata, attachments, template, context, send_at (and resent_from). Raises ValidationError."""
    name = fields.get("template")
    templates = {t.name: t for t in Template.objects.filter(name=name)} if name else {}
    now = timezone.now()
    email = _new_email(api_key=api_key, now=now, templates=templates, **fields)
    with transaction.atomic():
        email.save(force_insert=True)
        _publish_when_due([email], now)
    metrics.ACCEPTED.inc()
    return email


def email_create_batch(*, api_key: ApiKey, items: list[dict[str, Any]]) -> list[Email | dict]:
    """Stores the valid items of a batch in one INSERT; returns, in order, each Email or the item's errors.

    A constant number of queries whatever the batch's size: one for templates, one insert."""
    names = {item["template"] for item in items if item.get("template")}
    templates = {t.name: t for t in Template.objects.filter(name__in=names)} if names else {}
    now = timezone.now()
    results: list[Email | dict] = []
    for item in items:
        try:
            results.append(_new_email(api_key=api_key, now=now, templates=templates, **item))
        except ValidationError as exc:
            results.append(exc.detail)
        except PayloadTooLarge as exc:
            results.append({"size": [str(exc.detail)]})
    emails = [r for r in results if isinstance(r, Email)]
    with transaction.atomic():
        Email.objects.bulk_create(emails)
        _publish_when_due(emails, now)
    metrics.ACCEPTED.inc(len(emails))
    return results


def _publish_when_due(emails: list[Email], now: datetime) -> None:
    """Enqueue after commit (a worker must find the rows). Emails due beyond one sweep interval are
    published by the sweep as their time comes, so no long countdown sits in a worker's memory."""
    by_delay: dict[float, list[UUID]] = {}
    for email in emails:
        delay = max(0.0, (email.next_attempt_at - now).total_seconds())
        if delay <= settings.MAIL_SWEEP_INTERVAL:
            by_delay.setdefault(delay, []).append(email.id)
    for delay, ids in by_delay.items():
        transaction.on_commit(lambda ids=ids, delay=delay: queue.publish(ids, countdown=delay))


def email_resend(*, email: Email) -> Email:
    """A new email with the same content (attachments included), whose resent_from is `email`."""
    return email_create(
        api_key=email.api_key,
        from_email=email.from_email,
        to=email.to,
        cc=email.cc,
        bcc=email.bcc,
        reply_to=email.reply_to,
        subject=email.subject,
        text=email.text,
        html=email.html,
        headers=email.headers,
        tags=email.tags,
        metadata=email.metadata,
        attachments=email.attachments,
        resent_from=email,
    )


def idempotent(
    *, api_key: ApiKey, key: str, request_hash: str, produce: Callable[[], tuple[int, Any]]
) -> tuple[int, Any]:
    """Runs `produce` once per (api_key, key) and stores its (status, body); a repeat gets the stored
    response, a different request with the same key IdempotencyKeyReused.

    The key row is inserted first, in the same transaction as what `produce` writes: a concurrent
    duplicate blocks on the unique index until the first commits, then reads its response."""
    table = IdempotencyKey._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {table} (api_key_id, key, request_hash, status_code, response, created_at)
                VALUES (%s, %s, %s, 0, 'null', %s)
                ON CONFLICT (api_key_id, key) DO NOTHING RETURNING id""",  # noqa: S608 - our table name
            [api_key.id, key, request_hash, timezone.now()],
        )
        row = cursor.fetchone()
        if row is None:
            stored = IdempotencyKey.objects.get(api_key=api_key, key=key)
            if stored.request_hash != request_hash:
                raise IdempotencyKeyReused()
            return stored.status_code, stored.response
        status, body = produce()
        IdempotencyKey.objects.filter(id=row[0]).update(status_code=status, response=body)
    return status, body


def emails_retry_now(*, ids: list[UUID]) -> int:
    """FAILED emails get a fresh set of attempts, starting now. Returns how many."""
    now = timezone.now()
    with transaction.atomic():
        retried = list(
            Email.objects.filter(id__in=ids, status=Status.FAILED).select_for_update().values_list("id", flat=True)
        )
        Email.objects.filter(id__in=retried).update(
            status=Status.PENDING, attempts=0, next_attempt_at=now, last_error="", updated_at=now
        )
        transaction.on_commit(lambda: queue.publish(retried))
    return len(retried)


# --- sending -----------------------------------------------------------------------------


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
    outcomes = _send_pool().map(lambda item: _attempt(item[0], item[1], permits), to_send)
    sent = []
    for (email, _, events), outcome in zip(to_send, outcomes, strict=True):
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
    _record_sent(sent)


_pool: ThreadPoolExecutor | None = None


def _send_pool() -> ThreadPoolExecutor:
    """This process's senders: MAIL_SEND_THREADS provider calls overlap while one waits on the network.
    Only the provider calls run there; the database is read and written by the task's own thread."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(settings.MAIL_SEND_THREADS, thread_name_prefix="send")
    return _pool


def _attempt(email: Email, left_out: set[str], permits: dict) -> failover.Outcome:
    try:
        message = build_message(email, leave_out=left_out)
        return failover.send(message, ticket=str(email.id), permits=permits)
    except Exception as exc:
        # A bug or an unexpected failure must still end in an outcome, not a lease left to expire.
        # No message in the log: it may quote content.
        log.error("email %s: unexpected %s while sending", email.id, type(exc).__name__)
        error = ProviderError(f"internal error: {type(exc).__name__}", permanent=False)
        return failover.Outcome(failed=[failover.FailedTry("", error)])


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
             RETURNING *""",  # noqa: S608 - the table name is ours, the values are parameters
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
    """Marks the sent emails SENT in one UPDATE, each only while its claim still holds, and stores
    their events in one INSERT."""
    if not sent:
        return
    now = timezone.now()
    rows = ", ".join(["(%s::uuid, %s, %s, %s::timestamptz)"] * len(sent))
    params = [value for email, o, _ in sent for value in (str(email.id), o.provider, o.message_id, email.lease_until)]

    def write() -> set[str]:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"""UPDATE {Email._meta.db_table} AS e
                       SET status = %s, provider = v.provider, provider_message_id = v.message_id,
                           sent_at = %s, last_error = '', lease_until = NULL, updated_at = %s
                      FROM (VALUES {rows}) AS v (id, provider, message_id, lease)
                     WHERE e.id = v.id AND e.status = %s AND e.lease_until = v.lease
                 RETURNING e.id""",  # noqa: S608 - table name and placeholders are ours
                [Status.SENT, now, now, *params, Status.PROCESSING],
            )
            recorded = {str(row[0]) for row in cursor.fetchall()}
            events = []
            for email, outcome, email_events in sent:
                if str(email.id) in recorded:
                    sent_event = _event(EmailEvent.Type.SENT, outcome.provider, outcome.message_id)
                    for event in [*email_events, sent_event]:
                        event.email_id, event.at = email.id, now
                        events.append(event)
            EmailEvent.objects.bulk_create(events)
        return recorded

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


# --- delivery events and suppressions ----------------------------------------------------


def suppression_add(*, address: str, reason: str, detail: str = "", email: Email | None = None) -> Suppression:
    """Suppresses a bare address (idempotent: the first reason stays)."""
    suppression, _ = Suppression.objects.get_or_create(
        address=address.strip().lower(), defaults={"reason": reason, "detail": detail, "email": email}
    )
    return suppression


# Delivery events that mean the address must not get mail again.
SUPPRESSING_EVENTS = {EmailEvent.Type.BOUNCED: Suppression.Reason.BOUNCED,
                      EmailEvent.Type.COMPLAINED: Suppression.Reason.COMPLAINED}  # fmt: skip


def email_record_delivery_event(
    *, provider_message_id: str, event_type: str, recipient: str, at: datetime | None, detail: str
) -> Email | None:
    """Stores a provider's tracking event on its email; a hard bounce or complaint suppresses the recipient.

    Returns the email, or None when no email has that message id (not ours, or deleted)."""
    email = Email.objects.filter(provider_message_id=provider_message_id).only("id", "provider").first()
    if email is None:
        log.info("delivery event %s for an unknown message id; ignored", event_type)
        return None
    if event_type not in EmailEvent.Type.values:
        event_type = EmailEvent.Type.OTHER
    with transaction.atomic():
        EmailEvent.objects.create(
            email=email, type=event_type, provider=email.provider, detail=detail, at=at or timezone.now()
        )
        if event_type in SUPPRESSING_EVENTS and recipient:
            suppression_add(address=recipient, reason=SUPPRESSING_EVENTS[event_type], detail=detail, email=email)
    log.info("email %s: delivery event %s", email.id, event_type)
    return email


# --- recovery ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    recovered: int  # PROCESSING rows whose worker was lost, queued again
    failed: int  # the same, with no attempts left
    requeued: int  # PENDING rows that were due but apparently not in the queue
    upcoming: int  # PENDING rows coming due before the next sweep, published with their countdown


def emails_sweep_stranded(*, now: datetime | None = None) -> SweepResult:
    """Re-enqueues what the queue lost: expired leases, and due PENDING rows nobody picked up."""
    now = now or timezone.now()
    recovered, failed = _recover_expired_leases(now)
    requeued = _requeue_stranded_pending(now)
    upcoming = _publish_upcoming(now)
    IdempotencyKey.objects.filter(created_at__lt=now - IDEMPOTENCY_KEEP).delete()
    if recovered or failed or requeued or upcoming:
        log.info("sweep: %d recovered, %d failed, %d requeued, %d upcoming", len(recovered), failed, len(requeued),
                 upcoming)  # fmt: skip
    return SweepResult(recovered=len(recovered), failed=failed, requeued=len(requeued), upcoming=upcoming)


def _publish_upcoming(now: datetime) -> int:
    """Publishes, with their countdown, PENDING rows that come due before the next sweep and were too
    far off to be published when they were written (send_at, long retries)."""
    interval = timedelta(seconds=settings.MAIL_SWEEP_INTERVAL)
    rows = list(
        Email.objects.filter(status=Status.PENDING, next_attempt_at__gt=now, next_attempt_at__lte=now + interval)
        .filter(next_attempt_at__gt=F("updated_at") + interval)
        .values_list("id", "next_attempt_at")
    )
    for email_id, due in rows:
        queue.publish([email_id], countdown=(due - now).total_seconds())
    return len(rows)


def _recover_expired_leases(now: datetime) -> tuple[list[UUID], int]:
    table = Email._meta.db_table
    max_attempts = settings.MAIL_MAX_ATTEMPTS
    reason = "the worker was lost during the attempt"
    with transaction.atomic():
        rows = list(
            Email.objects.raw(
                f"""UPDATE {table}
                       SET status = CASE WHEN attempts >= %s THEN %s ELSE %s END,
                           last_error = CASE WHEN attempts >= %s THEN %s ELSE last_error END,
                           lease_until = NULL, next_attempt_at = %s, updated_at = %s
                     WHERE status = %s AND lease_until < %s
                 RETURNING id, status""",  # noqa: S608 - the table name is ours, the values are parameters
                [
                    max_attempts,
                    Status.FAILED,
                    Status.PENDING,
                    max_attempts,
                    f"{reason} (gave up after {max_attempts} attempts)",
                    now,
                    now,
                    Status.PROCESSING,
                    now,
                ],
            )
        )
        EmailEvent.objects.bulk_create(
            EmailEvent(
                email_id=row.id,
                type=EmailEvent.Type.FAILED if row.status == Status.FAILED else EmailEvent.Type.RECOVERED,
                at=now,
                detail=reason,
            )
            for row in rows
        )
    recovered = [row.id for row in rows if row.status == Status.PENDING]
    queue.publish(recovered)
    return recovered, len(rows) - len(recovered)


def _requeue_stranded_pending(now: datetime) -> list[UUID]:
    try:
        if queue.queue_depth() > SWEEP_BATCH:
            return []  # workers have plenty queued; rows waiting behind them are not lost
    except Exception as exc:
        log.warning("sweep: broker unreachable (%s); stranded emails wait for the next sweep", type(exc).__name__)
        return []
    # Due for longer than one sweep interval: its publish was lost (or the queue is slow;
    # a duplicate task is harmless, the claim makes it a no-op). Moving next_attempt_at to
    # now keeps the same row from being requeued again by the next sweep.
    stranded = Email.objects.filter(
        status=Status.PENDING, next_attempt_at__lte=now - timedelta(seconds=settings.MAIL_SWEEP_INTERVAL)
    ).order_by("next_attempt_at")
    ids = list(stranded.values_list("id", flat=True)[:SWEEP_BATCH])
    if ids:
        # Re-checked in the update: a worker may have rescheduled a row since the select.
        stranded.filter(id__in=ids).update(next_attempt_at=now)
        ids = list(
            Email.objects.filter(id__in=ids, status=Status.PENDING, next_attempt_at=now).values_list("id", flat=True)
        )
        queue.publish(ids)
    return ids
