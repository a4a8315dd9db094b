"""What providers report back (delivered, bounced, ...) and the suppressions it leads to."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from emails.fields import canonical_mailbox
from emails.models import PROVIDER_WEBHOOK_EVENTS, Email, EmailEvent, Suppression
from emails.services import webhook_outbox

log = logging.getLogger(__name__)

# Longer values match no email (the columns' sizes): they are refused before they reach a query.
MAX_MESSAGE_ID = Email._meta.get_field("provider_message_id").max_length
MAX_ADDRESS = Suppression._meta.get_field("address").max_length


def suppression_add(
    *, api_key_id: int | None, address: str, reason: str, detail: str = "", email: Email | None = None
) -> Suppression:
    """Suppresses a bare address for one key's emails, or for every key's with api_key_id None (idempotent:
    the first reason stays)."""
    suppression, _ = Suppression.objects.get_or_create(
        api_key_id=api_key_id,
        address=canonical_mailbox(address),
        defaults={"reason": reason, "detail": detail, "email": email},
    )
    return suppression


def suppression_add_for_key(*, api_key_id: int, address: str, detail: str) -> tuple[Suppression, bool]:
    """A key's own suppression of a bare address, as its API makes one: (the suppression, whether it is new).
    One the key has already stays as it is, with its first reason."""
    return Suppression.objects.get_or_create(
        api_key_id=api_key_id,
        address=canonical_mailbox(address),
        defaults={"reason": Suppression.Reason.MANUAL, "detail": detail},
    )


def suppression_remove(*, api_key_id: int, address: str) -> bool:
    """Lifts a key's own suppression of an address (never one for every key: those are the operator's).
    Returns whether there was one."""
    deleted, _ = Suppression.objects.filter(api_key_id=api_key_id, address=canonical_mailbox(address)).delete()
    return bool(deleted)


# Delivery events that mean the address must not get mail again.
SUPPRESSING_EVENTS = {EmailEvent.Type.BOUNCED: Suppression.Reason.BOUNCED,
                      EmailEvent.Type.COMPLAINED: Suppression.Reason.COMPLAINED}  # fmt: skip


def email_record_delivery_event(
    *, provider_message_id: str, event_type: str, recipient: str, at: datetime | None, detail: str
) -> Email | None:
    """Stores a provider's tracking event on its email; a hard bounce or complaint suppresses the recipient
    for the key whose email it was.

    The email is the one whose message id this is AND to which the recipient was sent: a message id alone
    proves nothing (over SMTP it is the Message-ID header every recipient sees, and a client may set it), so
    an event can only ever speak for an address the email went to. Returns the email, or None when the
    event is ignored: no email has that message id and recipient, or several do (the event cannot say whose
    it is)."""
    address = canonical_mailbox(recipient) if len(recipient) <= MAX_ADDRESS else recipient
    if not provider_message_id or len(provider_message_id) > MAX_MESSAGE_ID or not 0 < len(address) <= MAX_ADDRESS:
        log.info("delivery event %s without a usable message id or recipient; ignored", event_type)
        return None
    with_id = Email.objects.filter(provider_message_id=provider_message_id)
    matching = list(with_id.filter(recipients__contains=[address]).only("id", "provider", "api_key_id")[:2])
    if len(matching) != 1:
        other = with_id.values_list("id", flat=True).first() if not matching else None
        if other is not None:
            log.warning("email %s: delivery event %s for an address it was not sent to; ignored", other, event_type)
        elif matching:
            log.warning("emails %s: one delivery event %s matches several; ignored", _ids(matching), event_type)
        else:
            log.info("delivery event %s for an unknown message id; ignored", event_type)
        return None
    email = matching[0]
    if event_type not in EmailEvent.Type.values:
        event_type = EmailEvent.Type.OTHER
    with transaction.atomic():
        event = EmailEvent.objects.create(
            email=email, type=event_type, provider=email.provider, detail=detail, at=at or timezone.now()
        )
        if event_type in PROVIDER_WEBHOOK_EVENTS:
            with connection.cursor() as cursor:
                hooked = webhook_outbox.enqueue_provider_event(
                    cursor, email_id=email.id, event_type=PROVIDER_WEBHOOK_EVENTS[event_type], at=event.at,
                    detail=detail, recipient=address,
                )  # fmt: skip
            if hooked:
                transaction.on_commit(webhook_outbox.kick)
        if event_type in SUPPRESSING_EVENTS:
            reason = SUPPRESSING_EVENTS[event_type]
            suppression_add(api_key_id=email.api_key_id, address=address, reason=reason, detail=detail, email=email)
    log.info("email %s: delivery event %s", email.id, event_type)
    return email


def _ids(emails: list[Email]) -> str:
    return " ".join(str(email.id) for email in emails)
