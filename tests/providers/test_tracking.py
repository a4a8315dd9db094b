"""Open and click tracking an email asks for reaches the providers that track, and costs nothing at the others:
each ESP faked only at its HTTP API."""

import json
from urllib.parse import parse_qs

import pytest
import responses

from emails.models import Email
from emails.services import email_send
from tests.conftest import make_due, make_emails

pytestmark = pytest.mark.django_db

MAILGUN = "https://api.mailgun.net/v3/example.com/messages"
POSTAL = "https://postal.example.com/api/v1/send/message"
MAILGUN_PROVIDER = {"name": "mailgun", "backend": "mailgun", "options": {"api_key": "key-test"}}
POSTAL_PROVIDER = {
    "name": "postal", "backend": "postal", "options": {"api_key": "postal-key", "api_url": "https://postal.example.com"},
}  # fmt: skip


def _tracked_email(**tracking) -> str:
    [email_id] = make_emails(1, **tracking)
    make_due(email_id)
    return email_id


def test_a_provider_that_tracks_gets_the_tracking_asked_for(settings):
    settings.MAIL_PROVIDERS = [MAILGUN_PROVIDER]
    email_id = _tracked_email(track_opens=True, track_clicks=False)

    with responses.RequestsMock() as api:
        api.post(MAILGUN, json={"id": "<1@example.com>", "message": "Queued. Thank you."})
        email_send(email_id)
        form = parse_qs(api.calls[0].request.body)

    assert Email.objects.get(id=email_id).status == "SENT"
    assert (form["o:tracking-opens"], form["o:tracking-clicks"]) == (["yes"], ["no"])


def test_an_email_that_asks_for_nothing_leaves_the_providers_default(settings):
    settings.MAIL_PROVIDERS = [MAILGUN_PROVIDER]
    email_id = _tracked_email()

    with responses.RequestsMock() as api:
        api.post(MAILGUN, json={"id": "<2@example.com>", "message": "Queued. Thank you."})
        email_send(email_id)
        form = parse_qs(api.calls[0].request.body)

    assert not {"o:tracking-opens", "o:tracking-clicks"} & set(form)


def test_a_provider_without_tracking_sends_the_email_without_it_after_a_failover(settings):
    # Mailgun down, Postal (which anymail cannot ask to track) sends: the message the failover hands on must
    # not carry Mailgun's tracking into a provider that would refuse it as an unsupported feature.
    settings.MAIL_PROVIDERS = [MAILGUN_PROVIDER, {**POSTAL_PROVIDER, "priority": 2}]
    email_id = _tracked_email(track_opens=True, track_clicks=True)

    with responses.RequestsMock() as api:
        api.post(MAILGUN, status=503, body="Service Unavailable")
        api.post(POSTAL, json={"status": "success", "data": {"message_id": "m1", "messages": {
            "alice@example.org": {"id": 1, "token": "t"}}}})  # fmt: skip
        email_send(email_id)
        sent = json.loads(api.calls[-1].request.body)

    email = Email.objects.get(id=email_id)
    assert (email.status, email.provider) == ("SENT", "postal")
    assert not any("track" in name.lower() for name in sent)
