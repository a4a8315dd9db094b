"""What the dashboard shows, read in a fixed number of queries (PostgreSQL) and round trips (Redis)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from emails import selectors
from emails.models import ApiKey, Email, Template, Webhook, WebhookAttempt, WebhookMessage
from emails.queue import queue_depth
from emails.services.webhooks import DELETED
from providers import circuit
from providers.registry import BACKENDS, TEST_PROVIDER, ProviderConfig, parse_providers

log = logging.getLogger(__name__)

SHORT_BACKEND_NAMES = {path: name for name, path in reversed(BACKENDS.items())}


def dashboard_snapshot(*, now: datetime | None = None) -> dict:
    """Counts, queue, chart, providers and latest failures, as the dashboard's JSON gives them."""
    now = now or timezone.now()
    counts, estimated = selectors.counts_by_status_at_scale()
    providers = parse_providers(settings.MAIL_PROVIDERS)
    return {
        "now": now,
        "counts": counts,
        "estimated": estimated,  # statuses whose count is an estimate (large tables)
        "queue_depth": _queue_depth(),
        "oldest_pending_age_seconds": selectors.oldest_due_age_seconds(Email.objects.all(), now),
        "chart": selectors.emails_per_minute(now=now),
        "providers": _providers(providers, now),
        "failures": [_failure(email) for email in selectors.latest_failures()],
        "webhooks": webhook_activity(now=now),
    }


def _queue_depth() -> int | None:
    try:
        return queue_depth()
    except redis.RedisError as exc:
        log.warning("dashboard: queue depth unknown: Redis error %s", type(exc).__name__)
        return None  # shown as unknown: the rest of the dashboard still answers


def _providers(providers: list[ProviderConfig], now: datetime) -> list[dict]:
    activity = selectors.provider_activity(names=[p.name for p in providers] + [TEST_PROVIDER], now=now)
    rows = []
    for provider in providers:
        try:
            breaker = circuit.state(provider.name)
        except redis.RedisError:
            breaker = {"state": "unknown", "failures": None, "open_until": None}
        sent = activity[provider.name]["sent_last_minute"]
        rows.append(
            {
                "name": provider.name,
                # The backend's short name only: options hold credentials.
                "backend": SHORT_BACKEND_NAMES.get(provider.backend, provider.backend),
                "priority": provider.priority,
                "weight": provider.weight,
                "rate_limit": provider.rate_limit,
                "burst": provider.burst,
                "circuit": breaker,
                "sent_last_minute": sent,
                "rate_per_second": round(sent / 60, 2),
                "last_error": activity[provider.name]["last_error"],
            }
        )
    # Test emails, apart from the real providers' sends: listed while they are being recorded SENT.
    sent = activity[TEST_PROVIDER]["sent_last_minute"]
    if sent:
        rows.append(
            {
                "name": TEST_PROVIDER,
                "backend": "test keys' emails: never sent",
                "priority": None,
                "weight": None,
                "rate_limit": None,
                "burst": None,
                "circuit": {"state": "closed", "failures": 0, "open_until": None},
                "sent_last_minute": sent,
                "rate_per_second": round(sent / 60, 2),
                "last_error": None,
            }
        )
    return rows


def _failure(email: Email) -> dict:
    return {
        "id": email.id,
        "at": email.updated_at,
        "provider": email.provider,
        "attempts": email.attempts,
        "last_error": email.last_error,
        "admin_url": reverse("admin:emails_email_change", args=[email.id]),
    }


def template_names(*, limit: int = 500) -> list[str]:
    """Stored templates for the send form's picker."""
    return list(Template.objects.order_by("name").values_list("name", flat=True)[:limit])


def active_api_keys(*, limit: int = 500) -> list[dict]:
    """The keys an operator may send as from the form, with the senders each allows (empty: any) and whether
    it is a test key (its emails never leave)."""
    keys = ApiKey.objects.filter(revoked_at__isnull=True).order_by("name", "pk")
    return list(keys.values("id", "name", "prefix", "senders", "test")[:limit])


def active_api_key(*, api_key_id: int) -> ApiKey | None:
    """The key the form sends as, if it is not revoked: a revoked key sends nothing, from any door."""
    return ApiKey.objects.filter(pk=api_key_id, revoked_at__isnull=True).first()


# Attempts are read through the messages of this many days only (the webhookmessage_webhook index), not the
# webhook's whole history: a message is retried for about a day after it is written, so every attempt of the
# last 24 hours belongs to a message of the last two days.
WEBHOOK_WINDOW = timedelta(days=3)


def webhook_activity(*, now: datetime, limit: int = 50) -> list[dict]:
    """The newest webhooks (deleted ones left out), each with its key, its URL's scheme and host only (a path
    or query may hold the receiver's token), whether it is active, its latest delivery attempt in
    WEBHOOK_WINDOW and its failed attempts (no answer, or not 2xx) in the last 24 hours: one query."""
    webhooks, messages, attempts = (model._meta.db_table for model in (Webhook, WebhookMessage, WebhookAttempt))
    keys = ApiKey._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH recent AS (
                    SELECT w.id, w.url, w.active, w.disabled_reason, w.created_at, k.name, k.prefix
                      FROM {webhooks} AS w JOIN {keys} AS k ON k.id = w.api_key_id
                     WHERE w.disabled_reason <> %(deleted)s
                     ORDER BY w.created_at DESC, w.id DESC LIMIT %(limit)s
                )
                SELECT r.id, r.url, r.active, r.disabled_reason, r.name, r.prefix, a.last_at, a.last_status,
                       a.last_error, coalesce(a.failures, 0)
                  FROM recent AS r
                  LEFT JOIN LATERAL (
                      SELECT (array_agg(t.at ORDER BY t.at DESC))[1] AS last_at,
                             (array_agg(t.status_code ORDER BY t.at DESC))[1] AS last_status,
                             (array_agg(t.error ORDER BY t.at DESC))[1] AS last_error,
                             count(*) FILTER (WHERE t.at >= %(day_ago)s
                                              AND (t.status_code IS NULL OR t.status_code NOT BETWEEN 200 AND 299))
                                 AS failures
                        FROM {messages} AS m JOIN {attempts} AS t ON t.message_id = m.id
                       WHERE m.webhook_id = r.id AND m.created_at >= %(since)s
                  ) AS a ON true
                 ORDER BY r.created_at DESC, r.id DESC""",  # noqa: S608 - our tables
            {"deleted": DELETED, "limit": limit, "day_ago": now - timedelta(days=1), "since": now - WEBHOOK_WINDOW},
        )
        rows = cursor.fetchall()
    return [
        {
            "id": webhook_id,
            "api_key": f"{name} ({prefix}…)",
            "target": _target(url),
            "active": active,
            "disabled_reason": disabled_reason,
            "last_delivery": {"at": at, "status_code": status_code, "error": error} if at else None,
            "failures_last_day": failures,
            "admin_url": reverse("admin:emails_webhook_change", args=[webhook_id]),
        }
        for webhook_id, url, active, disabled_reason, name, prefix, at, status_code, error, failures in rows
    ]


def _target(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    host = parts.hostname or ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}"
