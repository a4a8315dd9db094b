"""Reads."""

from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet

from emails.models import ApiKey, Email


def email_get(*, api_key: ApiKey, email_id: UUID) -> Email | None:
    """The key's email with its events, or None (also for another key's email)."""
    return Email.objects.filter(api_key=api_key, id=email_id).prefetch_related("events").first()


def email_list(*, api_key: ApiKey, status: str | None = None) -> QuerySet[Email]:
    emails = Email.objects.filter(api_key=api_key).defer("text", "html")
    if status:
        emails = emails.filter(status=status)
    return emails
