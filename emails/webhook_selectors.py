"""Reads of a key's webhooks and of their deliveries, as the API shows them."""

from __future__ import annotations

from uuid import UUID

from django.db.models import F, QuerySet

from emails.models import ApiKey, Webhook, WebhookAttempt
from emails.services.webhooks import DELETED


def webhook_list(*, api_key: ApiKey) -> QuerySet[Webhook]:
    """The key's webhooks, newest first; deleted ones are not among them."""
    return Webhook.objects.filter(api_key=api_key).exclude(disabled_reason=DELETED).order_by("-created_at", "-id")


def webhook_get(*, api_key: ApiKey, webhook_id: UUID) -> Webhook | None:
    """The key's webhook, or None (also for another key's, or a deleted one)."""
    return webhook_list(api_key=api_key).filter(id=webhook_id).first()


def webhook_deliveries(*, webhook: Webhook, limit: int) -> list[dict]:
    """The webhook's latest `limit` delivery attempts, newest first: each with its message's id and event."""
    attempts = WebhookAttempt.objects.filter(message__webhook=webhook).order_by("-at", "-id")
    return list(attempts.values("at", "status_code", "error", "message_id", event=F("message__type"))[:limit])
