"""Cancelling: an operator stops PENDING emails before a worker sends them."""

from __future__ import annotations

import logging
from uuid import UUID

from django.db import connection, transaction
from django.utils import timezone

from emails.models import Email, EmailEvent
from emails.services import webhook_outbox
from infra import metrics

log = logging.getLogger(__name__)

Status = Email.Status
CANCELLED = "cancelled"


def emails_cancel(*, ids: list[UUID]) -> list[UUID]:
    """PENDING emails among `ids` end FAILED with last_error "cancelled"; returns their ids.

    Only PENDING rows change: one held by a worker (PROCESSING) is left to finish its attempt.
    The UPDATE is conditional on the status, like a worker's claim, so of a cancel and a claim
    racing for the same row exactly one wins: the claim then finds a FAILED row and skips it, or
    the cancel finds a PROCESSING one and leaves it. A task still queued for it becomes a no-op."""
    now = timezone.now()
    with transaction.atomic():
        cancelled = list(
            Email.objects.raw(
                f"""UPDATE {Email._meta.db_table}
                       SET status = %s, last_error = %s, lease_until = NULL, updated_at = %s
                     WHERE id = ANY(%s::uuid[]) AND status = %s
                 RETURNING id""",  # noqa: S608 - the table name is ours, the values are parameters
                [Status.FAILED, CANCELLED, now, [str(i) for i in ids], Status.PENDING],
            )
        )
        EmailEvent.objects.bulk_create(
            EmailEvent(email_id=email.id, type=EmailEvent.Type.CANCELLED, at=now, detail=CANCELLED)
            for email in cancelled
        )
        with connection.cursor() as cursor:
            if webhook_outbox.enqueue_status_changes(cursor, [email.id for email in cancelled]):
                transaction.on_commit(webhook_outbox.kick)
    metrics.FAILED.labels("").inc(len(cancelled))  # ends FAILED, as a suppressed email does: no provider
    if cancelled:
        log.info("cancelled %d email(s): %s", len(cancelled), " ".join(str(e.id) for e in cancelled))
    return [email.id for email in cancelled]
