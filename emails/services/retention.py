"""Retention: what the service keeps of an email once it is final, and for how long. Off unless configured.

- After MAIL_RETENTION_DAYS: its subject, bodies, headers and attachments are erased (erased_at says when);
  its status, addresses, tags, metadata and events stay, so the API, the dashboard and the statistics still
  account for it.
- After MAIL_DELETE_AFTER_DAYS: its row and its events are deleted.

An email counts as final for that long when it was created and last changed (became SENT or FAILED) that
long ago. Both run in batches of at most `batch` rows, each its own short transaction, oldest first through an
index (email_retention_due for erasing, email_created for deleting), so a run stays cheap however many rows
the table holds and however far behind it is."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection

from emails.models import Email

log = logging.getLogger(__name__)

BATCH = 1000
FINAL = (Email.Status.SENT, Email.Status.FAILED)


@dataclass
class RetentionResult:
    erased: int
    deleted: int


def emails_apply_retention(*, now: datetime | None = None, batch: int = BATCH, seconds: float = 20) -> RetentionResult:
    """Erases, then deletes, what MAIL_RETENTION_DAYS and MAIL_DELETE_AFTER_DAYS say, batch after batch for
    at most `seconds` (the next run goes on). `now` is PostgreSQL's clock unless given (tests)."""
    erased = deleted = 0
    if settings.MAIL_RETENTION_DAYS is None and settings.MAIL_DELETE_AFTER_DAYS is None:
        return RetentionResult(0, 0)
    now = now or _database_now()
    until = time.monotonic() + seconds
    if settings.MAIL_DELETE_AFTER_DAYS is not None:  # first: what is deleted need not be erased
        deleted = _in_batches(_delete_batch, now - timedelta(days=settings.MAIL_DELETE_AFTER_DAYS), batch, until)
    if settings.MAIL_RETENTION_DAYS is not None:
        erased = _in_batches(_erase_batch, now - timedelta(days=settings.MAIL_RETENTION_DAYS), batch, until)
    if erased or deleted:
        log.info("retention: %d email(s) erased, %d deleted", erased, deleted)
    return RetentionResult(erased=erased, deleted=deleted)


def _in_batches(apply, cutoff: datetime, batch: int, until: float) -> int:
    """apply(cutoff, batch) until a batch finds nothing or the time is up (at least one batch, so that every
    run makes progress)."""
    done = 0
    while count := apply(cutoff, batch):
        done += count
        if time.monotonic() >= until:
            break
    return done


def _erase_batch(cutoff: datetime, batch: int) -> int:
    table = Email._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {table}
                   SET subject = '', text = '', html = '', headers = '{{}}', attachments = '[]', content = '{{}}',
                       erased_at = statement_timestamp()
                 WHERE id IN (
                       SELECT id FROM {table}
                        WHERE status IN %s AND erased_at IS NULL AND created_at < %s AND updated_at < %s
                        ORDER BY created_at
                        LIMIT %s
                          FOR UPDATE SKIP LOCKED)""",  # noqa: S608 - the table name is ours
            [FINAL, cutoff, cutoff, batch],
        )
        return cursor.rowcount


def _delete_batch(cutoff: datetime, batch: int) -> int:
    ids = list(
        Email.objects.filter(status__in=FINAL, created_at__lt=cutoff, updated_at__lt=cutoff)
        .order_by("created_at")
        .values_list("id", flat=True)[:batch]
    )
    if not ids:
        return 0
    # Through the ORM: its events go with it; a suppression, a webhook message or a resend that names it keeps
    # its own row, without the link.
    return Email.objects.filter(id__in=ids).delete()[1].get(Email._meta.label, 0)


def _database_now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]
