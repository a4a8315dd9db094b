"""What providers report back (delivered, bounced, ...) and the suppressions it leads to."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from emails.models import Email, EmailEvent, Suppression

log = logging.getLogger(__name__)


def suppression_add(*, address: str, reason: str, detail: str = "", email: Email | None = None) -> Suppression:
    """Suppresses a bare address (idempotent: the first reason stays)."""
    suppression, _ = Suppression.objects.get_or_create(
        address=address.strip().lower(), defaults={"reason": reason, "detail": detail, "email": email}
    )
    return suppression


# Delivery events that mean the address must not get mail again.
SUPPRESSING_EVENTS = {EmailEvent.Type.BOUNCED: Suppression.Reason.BOUNCED,
                      EmailEvent.Type.COMPLAINED: Suppression.Reason.COMPLAINED}  # fmt: skip


def email_record_delivery_event(
    *, provider_message_id: str, event_type: str, recipient: str, at: datetime | None, detail: str
) -> Email | None:
    """Stores a provider's tracking event on its email; a hard bounce or complaint suppresses the recipient.

    Returns the email, or None when no email has that message id (not ours, or deleted)."""
    email = Email.objects.filter(provider_message_id=provider_message_id).only("id", "provider").first()
    if email is None:
        log.info("delivery event %s for an unknown message id; ignored", event_type)
        return None
    if event_type not in EmailEvent.Type.values:
        event_type = EmailEvent.Type.OTHER
    with transaction.atomic():
        EmailEvent.objects.create(
            email=email, type=event_type, provider=email.provider, detail=detail, at=at or timezone.now()
        )
        if event_type in SUPPRESSING_EVENTS and recipient:
            suppression_add(address=recipient, reason=SUPPRESSING_EVENTS[event_type], detail=detail, email=email)
    log.info("email %s: delivery event %s", email.id, event_type)
    return email
