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


def _owned_by(client, name: str, **parts) -> Template:
    return Template.objects.create(api_key=client.api_key, name=name, **{"subject": "Hi", "text": "Hi", **parts})


def test_bob_cannot_render_alices_template(alice, bob):
    _owned_by(alice, "invoice", text="Invoice for {{ name }}")

    one = _from_template(bob, template="invoice", context={"name": "Bob"})
    batch = bob.post("/api/v1/emails/batch", {"emails": [email_payload(template="invoice")]}, format="json")

    assert one.status_code == 400
    assert one.json() == {"template": ["No template named 'invoice'."]}  # exactly as a name that does not exist
    assert batch.json()["results"] == [{"errors": {"template": ["No template named 'invoice'."]}}]
    assert not Email.objects.exists()
    assert _from_template(alice, template="invoice", context={"name": "Ada"}).json()["text"] == "Invoice for Ada"


def test_a_shared_template_works_for_every_key(alice, bob, welcome):
    assert welcome.api_key is None
    for client in (alice, bob):
        assert _from_template(client, template="welcome", context={"name": "Ada"}).json()["subject"] == "Welcome, Ada!"


def test_a_keys_own_template_wins_over_the_shared_one(alice, bob, welcome):
    _owned_by(alice, "welcome", subject="Alice's welcome, {{ name }}")

    own = _from_template(alice, template="welcome", context={"name": "Ada"}).json()
    batch = alice.post(
        "/api/v1/emails/batch",
        {"emails": [{k: v for k, v in email_payload(template="welcome").items() if k != "subject"}]},
        format="json",
    ).json()
    shared = _from_template(bob, template="welcome", context={"name": "Bob"}).json()

    assert own["subject"] == "Alice's welcome, Ada"
    assert batch["results"][0]["subject"] == "Alice's welcome,"
    assert shared["subject"] == "Welcome, Bob!"


def test_an_operator_gives_a_template_its_owner_in_the_admin(admin_client, alice, welcome):
    form = {"name": "receipt", "api_key": alice.api_key.id, "subject": "Receipt", "text": "Thanks", "html": ""}

    assert admin_client.post("/admin/emails/template/add/", form).status_code == 302
    shared_again = admin_client.post("/admin/emails/template/add/", {**form, "name": "welcome", "api_key": ""})
    not_a_slug = admin_client.post("/admin/emails/template/add/", {**form, "name": "a b"})

    assert Template.objects.get(name="receipt").api_key == alice.api_key
    assert shared_again.status_code == 200  # the form again, with why: one shared template per name
    assert Template.objects.filter(name="welcome").count() == 1
    assert not_a_slug.status_code == 200
    assert not Template.objects.filter(name="a b").exists()
    assert "shared" in admin_client.get("/admin/emails/template/").content.decode()


def test_context_without_a_template_is_a_400_naming_context(alice):
    response = alice.post("/api/v1/emails", email_payload(context={"name": "Ada"}), format="json")

    assert response.status_code == 400
    assert response.json() == {"context": ["Only with a template: give `template` too."]}
    assert not Email.objects.exists()


def test_a_template_name_that_is_not_a_slug_is_a_400_saying_names_are_slugs(alice):
    response = _from_template(alice, template="Welcome email", context={})

    assert response.status_code == 400
    assert response.json() == {
        "template": [
            "'Welcome email' is not a template name: names are slugs (letters, digits, hyphens and underscores)."
        ]
    }
