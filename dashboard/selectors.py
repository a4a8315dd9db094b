"""What the dashboard shows, read in a fixed number of queries (PostgreSQL) and round trips (Redis)."""

from __future__ import annotations

import logging
from datetime import datetime

import redis
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from emails import selectors
from emails.models import ApiKey, Email, Template
from emails.queue import queue_depth
from providers import circuit
from providers.registry import BACKENDS, ProviderConfig, parse_providers

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
    }


def _queue_depth() -> int | None:
    try:
        return queue_depth()
    except redis.RedisError as exc:
        log.warning("dashboard: queue depth unknown: Redis error %s", type(exc).__name__)
        return None  # shown as unknown: the rest of the dashboard still answers


def _providers(providers: list[ProviderConfig], now: datetime) -> list[dict]:
    activity = selectors.provider_activity(names=[p.name for p in providers], now=now)
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
