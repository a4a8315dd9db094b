"""Reads."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import TypeVar
from uuid import UUID

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection
from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from emails.models import ERROR_TYPES, ApiKey, Email, EmailEvent, Suppression


def email_get(*, api_key: ApiKey, email_id: UUID) -> Email | None:
    """The key's email with its events, or None (also for another key's email)."""
    return Email.objects.filter(api_key=api_key, id=email_id).prefetch_related("events").first()


def suppressed_among(*, api_key: ApiKey, addresses: set[str]) -> set[str]:
    """Which of `addresses` (canonical mailboxes) are suppressed for this key's emails: its own suppressions
    and those for every key, as sending leaves them out."""
    whose = Q(api_key=None) | Q(api_key=api_key)
    return set(Suppression.objects.filter(whose, address__in=addresses).values_list("address", flat=True))


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


# What a list pages through: rows ordered newest first by created_at, ties broken by id.
Listed = TypeVar("Listed", Email, Suppression)


def encode_cursor(row: Email | Suppression) -> str:
    """The cursor of the page after `row`; after_cursor reads it back."""
    return base64.urlsafe_b64encode(f"{row.created_at.isoformat()}|{row.id}".encode()).decode()


def after_cursor(rows: QuerySet[Listed], cursor: str) -> QuerySet[Listed]:
    """The rows after `cursor` in (-created_at, -id) order; raises ValueError for a bad cursor (also for one
    whose id is not of this model's kind).

    Keyset pagination: a page starts strictly after the last row of the previous one, so rows
    arriving meanwhile (newer, hence before it) never shift or repeat what follows."""
    try:
        created_at, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        created, last_id = datetime.fromisoformat(created_at), rows.model._meta.pk.to_python(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError, DjangoValidationError):
        raise ValueError("Invalid cursor.") from None
    # The created_at bound alone is what an index on (…, created_at, id) can seek to; the OR is only checked on
    # the rows it reaches. Without the bound, each page would read the index from the first row again.
    after = Q(created_at__lt=created) | Q(created_at=created, id__lt=last_id)
    return rows.filter(Q(created_at__lte=created) & after)


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
        "test_key": api_key.test,
    }


# --- the dashboard's reads: each one query whatever the number of emails, providers or failures -------


def counts_by_status_at_scale(*, exact_below: int = 200_000) -> tuple[dict[str, int], list[str]]:
    """Counts by status for the whole table, and which of them are estimates.

    Below `exact_below` rows (the planner's estimate) all are exact. Above, an exact COUNT would read
    every row, so the statuses that are few (PENDING, PROCESSING: small partial indexes) are still
    counted exactly, and SENT and FAILED are estimated from the planner's statistics (pg_class and
    pg_stats, kept fresh by autovacuum's ANALYZE)."""
    table = Email._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT c.reltuples::bigint, s.most_common_vals::text::text[], s.most_common_freqs,
                       (SELECT count(*) FROM {table} WHERE status = %(pending)s),
                       (SELECT count(*) FROM {table} WHERE status = %(processing)s)
                  FROM pg_class c
                  LEFT JOIN pg_stats s ON s.schemaname = current_schema() AND s.tablename = c.relname
                       AND s.attname = 'status'
                 WHERE c.oid = %(table)s::regclass""",  # noqa: S608 - our table
            {"table": table, "pending": Email.Status.PENDING, "processing": Email.Status.PROCESSING},
        )
        reltuples, values, freqs, pending, processing = cursor.fetchone()
    if reltuples < exact_below:  # -1 when never analyzed
        return counts_by_status(Email.objects.all()), []
    share = dict(zip(values or [], freqs or [], strict=True))
    estimated = [Email.Status.SENT, Email.Status.FAILED]
    counts = {status: round(reltuples * share.get(status, 0)) for status in Email.Status.values}
    counts.update({Email.Status.PENDING: pending, Email.Status.PROCESSING: processing})
    return counts, estimated


def emails_per_minute(*, now: datetime, minutes: int = 60) -> dict[str, list]:
    """Accepted, sent and failed emails in each of the last `minutes` minutes (the current one last),
    in one query: each part is a range scan of its own index (created_at, sent_at, failed updated_at)."""
    table = Email._meta.db_table
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(minutes=minutes - 1)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT 'accepted', date_trunc('minute', created_at), count(*) FROM {table}
                 WHERE created_at >= %(start)s GROUP BY 2
                UNION ALL
                SELECT 'sent', date_trunc('minute', sent_at), count(*) FROM {table}
                 WHERE sent_at >= %(start)s GROUP BY 2
                UNION ALL
                SELECT 'failed', date_trunc('minute', updated_at), count(*) FROM {table}
                 WHERE status = %(failed)s AND updated_at >= %(start)s GROUP BY 2""",  # noqa: S608 - our table
            {"start": start, "failed": Email.Status.FAILED},
        )
        rows = cursor.fetchall()
    slots = [start + timedelta(minutes=i) for i in range(minutes)]
    series = {kind: dict.fromkeys(slots, 0) for kind in ("accepted", "sent", "failed")}
    for kind, minute, count in rows:
        if minute in series[kind]:  # rows stamped a little in the future (another host's clock) are left out
            series[kind][minute] = count
    return {"minutes": slots, **{kind: list(counts.values()) for kind, counts in series.items()}}


def latest_failures(*, limit: int = 10) -> list[Email]:
    """The most recently FAILED emails, newest first (the email_failed_updated index)."""
    fields = ["id", "status", "updated_at", "provider", "attempts", "last_error"]
    return list(Email.objects.filter(status=Email.Status.FAILED).only(*fields).order_by("-updated_at")[:limit])


def provider_activity(*, names: list[str], now: datetime) -> dict[str, dict]:
    """Per provider: emails sent in the last minute, and its latest error (a failed attempt's event),
    in one query: one range scan for the sends, one index probe per provider for the error."""
    table, events = Email._meta.db_table, EmailEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH sent AS (
                    SELECT provider, count(*) AS n FROM {table} WHERE sent_at >= %(minute_ago)s GROUP BY provider
                )
                SELECT p.name, coalesce(sent.n, 0), error.at, error.type, error.detail
                  FROM unnest(%(names)s::text[]) AS p (name)
                  LEFT JOIN sent ON sent.provider = p.name
                  LEFT JOIN LATERAL (
                      SELECT at, type, detail FROM {events}
                       WHERE provider = p.name AND type = ANY(%(types)s::text[])
                       ORDER BY at DESC LIMIT 1
                  ) AS error ON true""",  # noqa: S608 - our tables
            {"minute_ago": now - timedelta(minutes=1), "names": names, "types": ERROR_TYPES},
        )
        rows = cursor.fetchall()
    return {
        name: {
            "sent_last_minute": sent,
            "last_error": {"at": at, "type": type, "detail": detail} if at else None,
        }
        for name, sent, at, type, detail in rows
    }


def email_progress(*, email_id: UUID) -> Email | None:
    """An email's status and outcome, without its bodies: what the dashboard's card follows."""
    fields = ["id", "status", "attempts", "provider", "last_error", "created_at", "sent_at", "updated_at"]
    return Email.objects.filter(id=email_id).only(*fields).first()
