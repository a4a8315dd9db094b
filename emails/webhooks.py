"""Providers' tracking webhooks: anymail verifies and normalises them, we store what they say."""

from anymail.signals import AnymailTrackingEvent

from emails.services import email_record_delivery_event


def on_tracking_event(sender, event: AnymailTrackingEvent, esp_name: str, **kwargs) -> None:
    if not event.message_id:
        return
    email_record_delivery_event(
        provider_message_id=event.message_id,
        event_type=event.event_type,
        recipient=event.recipient or "",
        at=event.timestamp,
        detail=event.mta_response or event.description or event.reject_reason or "",
    )
