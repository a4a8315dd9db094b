"""A key's webhooks: made (the URL's target checked, the key's count bounded) and deleted. Delivery is
emails.services.webhook_delivery's; what is delivered is written by emails.services.webhook_outbox."""

from __future__ import annotations

import re

from django.conf import settings
from django.db import transaction

from emails.errors import InvalidFields
from emails.models import WEBHOOK_EVENTS, ApiKey, Webhook, WebhookMessage
from infra.addresses import UnsafeTarget, checked_addresses

MAX_WEBHOOKS_PER_KEY = 20
MAX_URL_LENGTH = 2000
MAX_EVENTS = len(WEBHOOK_EVENTS)
# http(s), a host (no user name or password: receivers verify signatures instead), then a path, query or
# fragment; no spaces or control characters anywhere. The API's schema states the same pattern.
URL_PATTERN = r"^https?://[^\s/?#@\\]+([/?#]\S*)?$"
_URL = re.compile(URL_PATTERN)
# Errors about the request as a whole, under the key the API uses for them.
NON_FIELD_ERRORS = "non_field_errors"
# What a webhook deleted through the API keeps as its disabled_reason: its row stays, turned off, so that a
# delivery in flight can still record its attempt and operators still see its history; the API no longer
# shows it.
DELETED = "deleted through the API"


def webhook_events_errors(events: list[str]) -> list[str]:
    """Why `events` cannot be a webhook's list of events; empty when it can."""
    unknown = [event for event in events if event not in WEBHOOK_EVENTS]
    if unknown:
        return [f"{str(unknown[0])[:50]!r} is not an event; the events are {', '.join(WEBHOOK_EVENTS)}."]
    if len(set(events)) != len(events):
        return ["Each event at most once."]
    return []


def webhook_create(*, api_key: ApiKey, url: str, events: list[str] | None = None) -> Webhook:
    """A webhook of the key's, told of `events` (None or empty: every event, those added later too).

    Raises InvalidFields naming `url` (not http(s), too long, or its host resolves to an address this service
    will not call: private, loopback, link-local, or none at all), `events`, or, over MAX_WEBHOOKS_PER_KEY,
    the request as a whole. Resolves the URL's host (a blocking DNS lookup), before any lock is taken."""
    events = list(events or [])
    errors = {}
    if events_errors := webhook_events_errors(events):
        errors["events"] = events_errors
    if len(url) > MAX_URL_LENGTH or not _URL.fullmatch(url):
        errors["url"] = [
            f"Give an http:// or https:// URL of at most {MAX_URL_LENGTH} characters: no spaces, no user name or "
            "password."
        ]
    elif not url.isascii():  # sent as the Host header, which is ASCII: the name in its punycode form is
        errors["url"] = ["Write the URL in ASCII: an international domain name in its xn-- (punycode) form."]
    if errors:
        raise InvalidFields(errors)
    try:
        checked_addresses(url, allow_private=settings.MAIL_WEBHOOK_ALLOW_PRIVATE)
    except UnsafeTarget as exc:
        raise InvalidFields({"url": [str(exc)]}) from None
    except ValueError:  # from urlsplit: brackets around a host that is not an IPv6 address
        raise InvalidFields({"url": ["The URL's host is not a name or an address."]}) from None
    with transaction.atomic():
        # The key's row, locked against a concurrent create of the same key (not against its emails, which
        # take no lock on it): otherwise two creates could each count 19 and both add one.
        ApiKey.objects.select_for_update(no_key=True).filter(pk=api_key.pk).first()
        if _owned(api_key).count() >= MAX_WEBHOOKS_PER_KEY:
            raise InvalidFields(
                {NON_FIELD_ERRORS: [f"An API key has at most {MAX_WEBHOOKS_PER_KEY} webhooks: delete one first."]}
            )
        return Webhook.objects.create(api_key=api_key, url=url, events=events)


def webhook_delete(*, webhook: Webhook) -> None:
    """Turns the webhook off for good: no event is written for it any more, its pending messages are
    disabled (no delivery starts after this; one a worker started just before may still arrive), and the API
    no longer shows it."""
    with transaction.atomic():
        # Messages first, then the webhook: the order in which a delivery's 410 locks them, so the two never
        # wait for each other.
        pending = WebhookMessage.objects.filter(webhook=webhook, status=WebhookMessage.Status.PENDING)
        pending.update(status=WebhookMessage.Status.DISABLED)
        Webhook.objects.filter(pk=webhook.pk).update(active=False, disabled_reason=DELETED)


def _owned(api_key: ApiKey):
    return Webhook.objects.filter(api_key=api_key).exclude(disabled_reason=DELETED)
