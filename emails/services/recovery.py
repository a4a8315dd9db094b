"""The sweep: what the queue lost (expired leases, stranded rows) and what comes due."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from emails import queue
from emails.models import Email, EmailEvent, IdempotencyKey, WebhookMessage
from emails.services import webhook_outbox
from infra import metrics

log = logging.getLogger(__name__)

Status = Email.Status
# Idempotency keys are kept at least 24 hours (the contract), then deleted by the sweep.
IDEMPOTENCY_KEEP = timedelta(hours=48)
# Finished webhook messages and their attempts are kept this long for GET /api/v1/webhooks/<id>/deliveries: the
# retry schedule spans about a day, and a receiver's owner looks back over a few more.
WEBHOOK_MESSAGES_KEEP_DAYS = 7
# At most this many stranded rows are re-enqueued per sweep, and none while the queue holds more.
SWEEP_BATCH = 1000


@dataclass(frozen=True)
class SweepResult:
    recovered: int  # PROCESSING rows whose worker was lost, queued again
    failed: int  # the same, with no attempts left
    requeued: int  # PENDING rows that were due but apparently not in the queue
    upcoming: int  # PENDING rows coming due before the next sweep, published with their countdown


def emails_sweep_stranded(*, now: datetime | None = None) -> SweepResult:
    """Re-enqueues what the queue lost: expired leases, and due PENDING rows nobody picked up.

    `now` is PostgreSQL's clock, as the leases and due times it compares with (tests may pass their own):
    a beat or worker host whose clock runs ahead must not take back live leases."""
    now = now or _database_now()
    recovered, failed = _recover_expired_leases(now)
    requeued = _requeue_stranded_pending(now)
    upcoming = _publish_upcoming(now)
    _delete_expired_idempotency_keys(now)
    _delete_finished_webhook_messages(now)
    if recovered or failed or requeued or upcoming:
        log.info("sweep: %d recovered, %d failed, %d requeued, %d upcoming", len(recovered), failed, len(requeued),
                 upcoming)  # fmt: skip
    return SweepResult(recovered=len(recovered), failed=failed, requeued=len(requeued), upcoming=upcoming)


def _delete_expired_idempotency_keys(now: datetime) -> None:
    # A bounded batch per sweep: a backlog (after beat was down for a day) must not make one statement that
    # outlasts the workers' statement timeout, and so fail every sweep from then on.
    expired = IdempotencyKey.objects.filter(created_at__lt=now - IDEMPOTENCY_KEEP).order_by("created_at")
    IdempotencyKey.objects.filter(id__in=list(expired.values_list("id", flat=True)[: SWEEP_BATCH * 10])).delete()


def _delete_finished_webhook_messages(now: datetime) -> None:
    # Delivered, failed or disabled messages, with their attempts, once a receiver can no longer ask for them
    # (GET /api/v1/webhooks/<id>/deliveries); bounded per sweep as the keys above.
    finished = WebhookMessage.objects.exclude(status=WebhookMessage.Status.PENDING).filter(
        created_at__lt=now - timedelta(days=WEBHOOK_MESSAGES_KEEP_DAYS)
    )
    ids = list(finished.order_by("created_at").values_list("id", flat=True)[: SWEEP_BATCH * 10])
    WebhookMessage.objects.filter(id__in=ids).delete()


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


def _database_now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]


LOST = "the worker was lost while sending it"


def _recover_expired_leases(now: datetime) -> tuple[list[UUID], int]:
    """Expired leases: their worker died (or hung) before recording an outcome. Each such loss is counted
    on the email; one that keeps killing its worker (a crash in a C extension, an out-of-memory kill) ends
    FAILED after MAIL_MAX_ATTEMPTS losses, as does one with no attempts left. The others are published one
    per task: a poison email then takes down only its own task, never its chunk-mates again."""
    table = Email._meta.db_table
    max_attempts = settings.MAIL_MAX_ATTEMPTS
    with transaction.atomic():
        rows = list(
            Email.objects.raw(
                f"""UPDATE {table}
                       SET status = CASE WHEN leases_lost + 1 >= %(max)s OR attempts >= %(max)s
                                         THEN %(failed)s ELSE %(pending)s END,
                           last_error = CASE WHEN leases_lost + 1 >= %(max)s THEN %(lost_max)s
                                             WHEN attempts >= %(max)s THEN %(attempts_max)s
                                             ELSE last_error END,
                           leases_lost = leases_lost + 1,
                           lease_until = NULL, next_attempt_at = %(now)s, updated_at = %(now)s
                     WHERE status = %(processing)s AND lease_until < %(now)s
                 RETURNING id, status, last_error, leases_lost""",  # noqa: S608 - the table name is ours
                {
                    "max": max_attempts,
                    "failed": Status.FAILED,
                    "pending": Status.PENDING,
                    "processing": Status.PROCESSING,
                    "lost_max": f"{LOST}, {max_attempts} times: its send may crash the worker",
                    "attempts_max": f"{LOST} (gave up after {max_attempts} attempts)",
                    "now": now,
                },
            )
        )
        EmailEvent.objects.bulk_create(
            EmailEvent(email_id=row.id, type=EmailEvent.Type.FAILED, at=now, detail=row.last_error)
            if row.status == Status.FAILED
            else EmailEvent(
                email_id=row.id,
                type=EmailEvent.Type.RECOVERED,
                at=now,
                detail=f"{LOST} ({row.leases_lost} of {max_attempts} times)",
            )
            for row in rows
        )
        failed = [row.id for row in rows if row.status == Status.FAILED]
        with connection.cursor() as cursor:
            if webhook_outbox.enqueue_status_changes(cursor, failed):
                transaction.on_commit(webhook_outbox.kick)
    recovered = [row.id for row in rows if row.status == Status.PENDING]
    for row in rows:
        if row.status == Status.FAILED:
            metrics.FAILED.labels("").inc()
            log.warning("email %s failed: %s", row.id, row.last_error)
    queue.publish(recovered, per_task=1)
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
