"""The templates API: a key makes, lists, shows, replaces and deletes its own templates, checked as the admin
checks them; shared templates are listed and shown but read-only; another key's are invisible and never render
for it; an email sent from a template made here renders it."""

import pytest

from emails.models import Template
from emails.services import email_send
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db

WELCOME = {
    "name": "welcome",
    "subject": "Welcome, {{ name }}!",
    "text": "Hello {{ name }}.",
    "html": "<p>{{ name }}</p>",
}


def _create(client, **overrides):
    return client.post("/api/v1/templates", {**WELCOME, **overrides}, format="json")


def _from_template(client, template="welcome", **context):
    payload = {k: v for k, v in email_payload().items() if k not in ("subject", "text")}
    return client.post("/api/v1/emails", {**payload, "template": template, "context": context}, format="json")


@pytest.fixture
def shared(db) -> Template:
    return Template.objects.create(name="receipt", subject="Your receipt", text="Shared {{ n }}.")


def test_a_made_template_is_shown_listed_and_renders_the_keys_emails(alice, sending_to_sink):
    made = _create(alice)

    assert made.status_code == 201
    assert made["Location"] == "/api/v1/templates/welcome"
    body = made.json()
    assert {k: body[k] for k in WELCOME} == WELCOME
    assert body["shared"] is False and body["updated_at"].endswith("Z")
    assert alice.get("/api/v1/templates/welcome").json() == body
    assert alice.get("/api/v1/templates").json() == {"results": [body]}

    email_id = _from_template(alice, name="Ada").json()["id"]
    email_send(email_id)

    [received] = sending_to_sink.received
    assert received.message["Subject"] == "Welcome, Ada!"


def test_replacing_changes_what_later_emails_render(alice):
    _create(alice)
    before = _from_template(alice, name="Ada").json()

    replaced = alice.put("/api/v1/templates/welcome", {"subject": "Hi {{ name }}", "text": "New."}, format="json")

    assert replaced.status_code == 200
    assert (replaced.json()["subject"], replaced.json()["text"], replaced.json()["html"]) == (
        "Hi {{ name }}",
        "New.",
        "",
    )
    after = _from_template(alice, name="Ada").json()
    assert (before["subject"], after["subject"], after["text"]) == ("Welcome, Ada!", "Hi Ada", "New.")


def test_a_deleted_template_is_gone_and_emails_naming_it_are_refused(alice):
    _create(alice)

    assert alice.delete("/api/v1/templates/welcome").status_code == 204

    assert alice.get("/api/v1/templates/welcome").status_code == 404
    assert alice.delete("/api/v1/templates/welcome").status_code == 404
    refused = _from_template(alice, name="Ada")
    assert refused.status_code == 400 and list(refused.json()) == ["template"]


def test_a_name_the_key_has_already_is_refused_naming_name(alice):
    _create(alice)

    again = _create(alice, subject="Other")

    assert again.status_code == 400
    assert list(again.json()) == ["name"]
    assert Template.objects.get().subject == WELCOME["subject"]


@pytest.mark.parametrize("part", ["subject", "text", "html"])
def test_a_part_that_does_not_compile_is_refused_naming_it(alice, part):
    response = _create(alice, **{part: "Hello {% if %}"})

    assert response.status_code == 400
    assert list(response.json()) == [part]
    assert "Does not compile" in response.json()[part][0]
    assert not Template.objects.exists()


ENGINE_FAILURES = {
    "relative include": '{% include "./other" %}',
    "relative extends": '{% extends "../base" %}',
    "600 nested nots": "{% if " + "not " * 600 + "a %}x{% endif %}",  # longer than a subject may be
}


ENGINE_FAILURE_CASES = [
    pytest.param(part, source, id=f"{part}, {name}")
    for name, source in ENGINE_FAILURES.items()
    for part in ("subject", "text", "html")
    if len(source) <= 998 or part != "subject"
]


@pytest.mark.parametrize(("part", "source"), ENGINE_FAILURE_CASES)
def test_a_part_the_template_engine_fails_on_is_refused_naming_it_not_a_500(alice, part, source):
    # As found: the engine raised AttributeError and RecursionError, not TemplateSyntaxError, at compile.
    response = _create(alice, **{part: source})

    assert response.status_code == 400, response.content[:300]
    assert list(response.json()) == [part]
    assert "Does not compile" in response.json()[part][0]
    assert not Template.objects.exists()


def test_a_replacement_that_does_not_compile_keeps_the_template_as_it_was(alice):
    _create(alice)

    response = alice.put(
        "/api/v1/templates/welcome", {"subject": "Hi", "html": "{{ name|nosuchfilter }}"}, format="json"
    )

    assert response.status_code == 400 and list(response.json()) == ["html"]
    assert Template.objects.get().html == WELCOME["html"]


def test_neither_text_nor_html_is_refused_naming_both(alice):
    response = _create(alice, text="", html="  ")

    assert response.status_code == 400
    assert sorted(response.json()) == ["html", "text"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"name": "not a slug"}, "name"),
        ({"name": "a" * 101}, "name"),
        ({"subject": "two\nlines"}, "subject"),
        ({"subject": "s" * 999}, "subject"),
        ({"colour": "red"}, "colour"),
    ],
    ids=["name-not-a-slug", "name-too-long", "subject-two-lines", "subject-too-long", "unknown-field"],
)
def test_what_the_admin_would_refuse_is_refused_naming_the_field(alice, fields, named):
    response = _create(alice, **fields)

    assert response.status_code == 400
    assert list(response.json()) == [named]


def test_bodies_over_an_emails_size_are_refused(alice, settings):
    settings.MAIL_MAX_EMAIL_BYTES = 1000

    response = _create(alice, text="é" * 300, html="é" * 300)  # 600 characters, 1200 bytes

    assert response.status_code == 400
    assert sorted(response.json()) == ["html", "text"]


def test_shared_templates_are_listed_and_shown_but_read_only(alice, shared):
    _create(alice)

    listed = alice.get("/api/v1/templates").json()["results"]

    assert [(t["name"], t["shared"]) for t in listed] == [("receipt", True), ("welcome", False)]
    assert alice.get("/api/v1/templates/receipt").json()["shared"] is True
    put = alice.put("/api/v1/templates/receipt", {"subject": "Mine", "text": "x"}, format="json")
    assert put.status_code == 404 and "of yours" in put.json()["detail"]
    assert alice.delete("/api/v1/templates/receipt").status_code == 404
    assert Template.objects.get(name="receipt").subject == "Your receipt"


def test_a_keys_own_template_may_shadow_a_shared_one_for_its_emails_only(alice, bob, shared):
    made = _create(alice, name="receipt", subject="Alice's receipt", text="Own {{ n }}.", html="")

    assert made.status_code == 201
    listed = alice.get("/api/v1/templates").json()["results"]
    assert [(t["name"], t["shared"]) for t in listed] == [("receipt", False), ("receipt", True)]
    assert alice.get("/api/v1/templates/receipt").json()["shared"] is False
    assert _from_template(alice, "receipt", n=1).json()["text"] == "Own 1."
    assert _from_template(bob, "receipt", n=1).json()["text"] == "Shared 1."

    alice.delete("/api/v1/templates/receipt")

    assert _from_template(alice, "receipt", n=2).json()["text"] == "Shared 2."


def test_another_keys_template_is_invisible_and_never_renders(alice, bob):
    _create(alice)

    assert bob.get("/api/v1/templates").json() == {"results": []}
    assert bob.get("/api/v1/templates/welcome").status_code == 404
    assert bob.put("/api/v1/templates/welcome", {"subject": "x", "text": "x"}, format="json").status_code == 404
    assert bob.delete("/api/v1/templates/welcome").status_code == 404
    refused = _from_template(bob, name="Ada")
    assert refused.status_code == 400 and list(refused.json()) == ["template"]
    assert _create(bob, subject="Bob's").status_code == 201  # the same name, its own
    assert alice.get("/api/v1/templates/welcome").json()["subject"] == WELCOME["subject"]


def test_the_list_is_bounded(alice):
    Template.objects.bulk_create(
        Template(api_key=alice.api_key, name=f"t{n:03}", subject="s", text="t") for n in range(501)
    )

    results = alice.get("/api/v1/templates").json()["results"]

    assert len(results) == 500 and results[0]["name"] == "t000"


def test_without_a_key_nothing_is_shown_or_made(client):
    assert client.get("/api/v1/templates").status_code == 401
    assert client.post("/api/v1/templates", WELCOME, content_type="application/json").status_code == 401
    assert not Template.objects.exists()
