"""A key's failed emails sent again, chosen by filters (the API's bulk retry)."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from emails import queue
from emails.models import ApiKey, Email, EmailEvent

Status = Email.Status

# Emails per transaction: each chunk's row locks are held only while it is updated, and its ids are published
# once it commits, so a retry of many emails neither blocks workers for long nor waits to start sending.
CHUNK = 500
SUPPRESSED = "suppressed"
RETRIED = "retried through the API"


def emails_retry_failed(
    *,
    api_key: ApiKey,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    provider: str | None = None,
    error_contains: str | None = None,
    chunk: int = CHUNK,
) -> int:
    """The key's FAILED emails matching every filter given get a fresh set of attempts, starting now, as
    emails_retry_now gives them; those that failed because every recipient is suppressed stay FAILED (a retry
    would fail them again). Returns how many.

    Chunks are taken in id order, each after the last one's greatest id, so an email retried here that fails
    again before the last chunk is never retried twice by one request."""
    matching = Email.objects.filter(api_key=api_key, status=Status.FAILED).exclude(last_error=SUPPRESSED)
    if created_after:
        matching = matching.filter(created_at__gt=created_after)
    if created_before:
        matching = matching.filter(created_at__lt=created_before)
    if provider:
        matching = matching.filter(provider=provider)
    if error_contains:
        matching = matching.filter(last_error__icontains=error_contains)
    count, after = 0, None
    while True:
        retried = _retry_chunk(matching if after is None else matching.filter(id__gt=after), chunk)
        count += len(retried)
        if len(retried) < chunk:
            return count
        after = retried[-1]


def _retry_chunk(matching, chunk: int) -> list:
    now = timezone.now()
    with transaction.atomic():
        # SKIP LOCKED: an email an operator or a worker holds right now is left as it is, not waited for.
        retried = list(matching.order_by("id").select_for_update(skip_locked=True).values_list("id", flat=True)[:chunk])
        Email.objects.filter(id__in=retried).update(
            status=Status.PENDING, attempts=0, next_attempt_at=now, last_error="", updated_at=now
        )
        EmailEvent.objects.bulk_create(
            EmailEvent(email_id=email_id, type=EmailEvent.Type.RETRIED, at=now, detail=RETRIED) for email_id in retried
        )
        transaction.on_commit(lambda: queue.publish(retried))
    return retried
