"""Reads."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from uuid import UUID

from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from emails.models import ApiKey, Email


def email_get(*, api_key: ApiKey, email_id: UUID) -> Email | None:
    """The key's email with its events, or None (also for another key's email)."""
    return Email.objects.filter(api_key=api_key, id=email_id).prefetch_related("events").first()


def email_list(
    *,
    api_key: ApiKey,
    status: str | None = None,
    tag: str | None = None,
    to: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Email]:
    """The key's emails, newest first (ties broken by id, so the order is total)."""
    emails = Email.objects.filter(api_key=api_key).defer("text", "html", "attachments", "headers")
    if status:
        emails = emails.filter(status=status)
    if tag:
        # exclude(tags=[]) states the partial GIN index's condition, so that the planner can use it.
        emails = emails.filter(tags__contains=[tag]).exclude(tags=[])
    if to:
        emails = emails.filter(recipients__contains=[to.lower()])
    if created_after:
        emails = emails.filter(created_at__gt=created_after)
    if created_before:
        emails = emails.filter(created_at__lt=created_before)
    return emails.order_by("-created_at", "-id")


def encode_cursor(email: Email) -> str:
    return base64.urlsafe_b64encode(f"{email.created_at.isoformat()}|{email.id}".encode()).decode()


def after_cursor(emails: QuerySet[Email], cursor: str) -> QuerySet[Email]:
    """The emails after `cursor` in (-created_at, -id) order; raises ValueError for a bad cursor.

    Keyset pagination: a page starts strictly after the last row of the previous one, so rows
    arriving meanwhile (newer, hence before it) never shift or repeat what follows."""
    try:
        created_at, email_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        created, last_id = datetime.fromisoformat(created_at), UUID(email_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("Invalid cursor.") from None
    return emails.filter(Q(created_at__lt=created) | Q(created_at=created, id__lt=last_id))


def counts_by_status(emails: QuerySet[Email]) -> dict[str, int]:
    """Every status, with 0 for those that have no email."""
    counts = dict(emails.values_list("status").annotate(n=Count("id")).order_by())
    return {status: counts.get(status, 0) for status in Email.Status.values}


def oldest_due_age_seconds(emails: QuerySet[Email], now: datetime) -> float:
    """How long the longest-waiting due PENDING email has waited (scheduled ones are not waiting yet)."""
    waiting = emails.filter(status=Email.Status.PENDING, next_attempt_at__lte=now)
    oldest = waiting.aggregate(at=Min("next_attempt_at"))["at"]
    return (now - oldest).total_seconds() if oldest else 0.0


def email_stats(*, api_key: ApiKey) -> dict:
    now = timezone.now()
    emails = Email.objects.filter(api_key=api_key)
    hour_ago = now - timedelta(hours=1)
    last_hour = emails.filter(updated_at__gte=hour_ago).aggregate(
        sent_last_hour=Count("id", filter=Q(status=Email.Status.SENT, sent_at__gte=hour_ago)),
        failed_last_hour=Count("id", filter=Q(status=Email.Status.FAILED)),
    )
    return {
        "counts": counts_by_status(emails),
        "oldest_pending_age_seconds": oldest_due_age_seconds(emails, now),
        **last_hour,
    }
