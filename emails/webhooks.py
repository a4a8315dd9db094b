"""Providers' tracking webhooks: anymail verifies and normalises them, we store what they say.

Only tracking routes are mounted, only for the ESPs that MAIL_PROVIDERS sends through, and only when the
webhook secret is set: anymail lets a request through with a warning when no secret is configured, and for
most ESPs (Postmark among them) that basic auth is the only proof that a request comes from the ESP."""

from __future__ import annotations

import functools
from collections.abc import Callable

from anymail.signals import AnymailTrackingEvent
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, path
from django.utils.module_loading import import_string

from emails.parsers import MAX_JSON_DEPTH, nested_deeper_than
from emails.services import email_record_delivery_event
from providers.registry import parse_providers

ANYMAIL_BACKENDS = "anymail.backends."

# anymail's tracking view for each of its backend modules. Mandrill has only a combined view: inbound
# events posted to it go to anymail's inbound signal, which nothing here receives.
TRACKING_VIEWS = {
    "amazon_ses": "anymail.webhooks.amazon_ses.AmazonSESTrackingWebhookView",
    "brevo": "anymail.webhooks.brevo.BrevoTrackingWebhookView",
    "mailersend": "anymail.webhooks.mailersend.MailerSendTrackingWebhookView",
    "mailgun": "anymail.webhooks.mailgun.MailgunTrackingWebhookView",
    "mailjet": "anymail.webhooks.mailjet.MailjetTrackingWebhookView",
    "mailtrap": "anymail.webhooks.mailtrap.MailtrapTrackingWebhookView",
    "mandrill": "anymail.webhooks.mandrill.MandrillCombinedWebhookView",
    "postal": "anymail.webhooks.postal.PostalTrackingWebhookView",
    "postmark": "anymail.webhooks.postmark.PostmarkTrackingWebhookView",
    "resend": "anymail.webhooks.resend.ResendTrackingWebhookView",
    "sendgrid": "anymail.webhooks.sendgrid.SendGridTrackingWebhookView",
    "sendinblue": "anymail.webhooks.sendinblue.SendinBlueTrackingWebhookView",
    "sparkpost": "anymail.webhooks.sparkpost.SparkPostTrackingWebhookView",
    "unisender_go": "anymail.webhooks.unisender_go.UnisenderGoTrackingWebhookView",
}


def tracking_webhook_routes() -> list[URLPattern]:
    """/<esp>/tracking/ for each ESP a configured provider sends through; none without the webhook secret
    (MAIL_WEBHOOK_SECRET, which the settings hand to anymail as its WEBHOOK_SECRET)."""
    if not settings.ANYMAIL.get("WEBHOOK_SECRET"):
        return []
    esps = sorted({_esp(provider.backend) for provider in parse_providers(settings.MAIL_PROVIDERS)} - {None})
    return [
        path(f"{esp}/tracking/", _bounded(import_string(TRACKING_VIEWS[esp]).as_view()), name=f"{esp}_tracking_webhook")
        for esp in esps
    ]


def _bounded(view: Callable) -> Callable:
    """anymail's views read the body with json.loads, which recurses: JSON nested deeper than our parsers
    take is a 400 before it gets there, not a RecursionError's 500."""

    @functools.wraps(view)  # keeps anymail's csrf_exempt
    def bounded_view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if nested_deeper_than(request.body, MAX_JSON_DEPTH):
            return JsonResponse({"detail": f"JSON nested deeper than {MAX_JSON_DEPTH} levels."}, status=400)
        return view(request, *args, **kwargs)

    return bounded_view


def _esp(backend: str) -> str | None:
    """'anymail.backends.postmark.EmailBackend' -> 'postmark'; None for a backend that is not an ESP's."""
    if not backend.startswith(ANYMAIL_BACKENDS):
        return None
    esp = backend.removeprefix(ANYMAIL_BACKENDS).partition(".")[0]
    return esp if esp in TRACKING_VIEWS else None


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
