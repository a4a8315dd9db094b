"""The sweep: what the queue lost (expired leases, stranded rows) and what comes due."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from emails import queue
from emails.models import Email, EmailEvent, IdempotencyKey

log = logging.getLogger(__name__)

Status = Email.Status
# Idempotency keys are kept at least 24 hours (the contract), then deleted by the sweep.
IDEMPOTENCY_KEEP = timedelta(hours=48)
# At most this many stranded rows are re-enqueued per sweep, and none while the queue holds more.
SWEEP_BATCH = 1000


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
