"""Stored templates, rendered with each email's context at submit: what is stored is what is sent."""

import pytest

from emails.models import Email, Template
from emails.services import email_send
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db


@pytest.fixture
def welcome(db) -> Template:
    return Template.objects.create(
        name="welcome",
        subject="Welcome, {{ name }}!",
        text="Hello {{ name }},\nyour plan is {{ plan|default:'free' }}.",
        html="<p>Hello {{ name }}</p>",
    )


def _from_template(client, **fields):
    payload = {k: v for k, v in email_payload(**fields).items() if k in fields or k not in ("subject", "text")}
    return client.post("/api/v1/emails", payload, format="json")


def test_it_renders_each_emails_context(alice, welcome):
    ada = _from_template(alice, template="welcome", context={"name": "Ada", "plan": "pro"}).json()
    bob = _from_template(alice, template="welcome", context={"name": "Bob"}).json()

    assert (ada["subject"], ada["text"], ada["html"]) == (
        "Welcome, Ada!",
        "Hello Ada,\nyour plan is pro.",
        "<p>Hello Ada</p>",
    )
    assert (bob["subject"], bob["text"]) == ("Welcome, Bob!", "Hello Bob,\nyour plan is free.")
    assert Email.objects.get(id=ada["id"]).template == "welcome"


def test_it_escapes_the_context_in_html_only(alice, welcome):
    body = _from_template(alice, template="welcome", context={"name": "<script>alert(1)</script>"}).json()

    assert body["html"] == "<p>Hello &lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert body["text"].startswith("Hello <script>alert(1)</script>,")


def test_what_is_rendered_is_what_is_sent(alice, welcome, sending_to_sink):
    email_id = _from_template(alice, template="welcome", context={"name": "Ada"}).json()["id"]

    email_send(email_id)

    [received] = sending_to_sink.received
    assert received.message["Subject"] == "Welcome, Ada!"
    html = next(p for p in received.message.walk() if p.get_content_type() == "text/html")
    assert html.get_payload(decode=True).decode() == "<p>Hello Ada</p>"


def test_the_requests_own_fields_win_over_the_template(alice, welcome):
    body = _from_template(alice, template="welcome", context={"name": "Ada"}, subject="Hi Ada").json()

    assert body["subject"] == "Hi Ada"
    assert body["html"] == "<p>Hello Ada</p>"


def test_an_unknown_template_is_a_400(alice):
    response = _from_template(alice, template="nope", context={})

    assert response.status_code == 400
    assert response.json() == {"template": ["No template named 'nope'."]}
    assert not Email.objects.exists()


def test_a_template_that_does_not_render_is_a_400(alice):
    Template.objects.create(name="broken", subject="Hi", text="{% if %}")

    response = _from_template(alice, template="broken", context={})

    assert response.status_code == 400
    assert "does not render" in response.json()["template"][0]
    assert not Email.objects.exists()


def test_a_subject_is_needed_from_the_template_or_the_request(alice):
    Template.objects.create(name="nosubject", subject="", text="Hi")

    response = _from_template(alice, template="nosubject")

    assert response.status_code == 400
    assert "subject" in response.json()


def test_a_context_line_break_cannot_split_the_subject(alice, welcome):
    body = _from_template(alice, template="welcome", context={"name": "Ada\r\nBcc: victim@example.org"}).json()

    assert body["subject"] == "Welcome, Ada Bcc: victim@example.org!"
