"""The dashboard's send form: a staff session's POST, CSRF-checked, validated exactly as the API validates."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from emails.models import ApiKey, Email, Template
from emails.services import api_key_create
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_browser() -> Client:
    """A staff session that may send (the permission to add emails), whose client checks CSRF as a
    browser's requests are checked."""
    client = Client(enforce_csrf_checks=True)
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(content_type__app_label="emails", codename="add_email"))
    client.force_login(user)
    client.get("/dashboard/")  # sets the CSRF cookie, as loading the page does
    return client


@pytest.fixture
def shop_key(db) -> ApiKey:
    return api_key_create(name="shop")[0]


def _post(client: Client, body: dict, *, csrf: bool = True):
    headers = {"X-CSRFToken": client.cookies["csrftoken"].value} if csrf else {}
    return client.post("/dashboard/emails", body, content_type="application/json", headers=headers)


def test_it_accepts_an_email_and_answers_its_id_and_status(staff_browser, shop_key):
    response = _post(staff_browser, email_payload(api_key=shop_key.id))

    assert response.status_code == 202
    body = response.json()
    email = Email.objects.get(id=body["id"])
    assert (body["status"], email.status, email.subject, email.to) == ("PENDING", "PENDING", "Your order",
                                                                       ["alice@example.org"])  # fmt: skip
    assert email.api_key == shop_key  # sent as the key the operator picked
    assert staff_browser.get(f"/dashboard/emails/{email.id}").json()["status"] == "PENDING"


def test_it_refuses_a_post_without_the_csrf_token(staff_browser, shop_key):
    response = _post(staff_browser, email_payload(api_key=shop_key.id), csrf=False)

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not Email.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        email_payload(**{"from": "not an address"}),
        email_payload(to=[]),
        email_payload(subject="two\nlines"),
        email_payload(text="", html=""),
        email_payload(cc=[f"c{n}@example.org" for n in range(50)]),
        email_payload(template="missing"),
        {"to": ["a@example.org"], "bogus": 1},
    ],
)
def test_it_names_the_bad_fields_exactly_as_the_api_does(staff_browser, alice, body):
    from_form = _post(staff_browser, {**body, "api_key": alice.api_key.id})  # as alice: the same checks apply
    from_api = alice.post("/api/v1/emails", body, format="json")

    assert from_form.status_code == from_api.status_code == 400
    assert from_form.json() == from_api.json()
    assert not Email.objects.exists()


def test_it_renders_a_stored_template_with_its_context(staff_browser, shop_key):
    Template.objects.create(name="welcome", subject="Welcome, {{ name }}", html="<p>Hi {{ name }}</p>")

    response = _post(staff_browser, {"from": "shop@example.com", "to": ["a@example.org"], "template": "welcome",
                                     "context": {"name": "<Alice>"}, "api_key": shop_key.id})  # fmt: skip

    assert response.status_code == 202
    email = Email.objects.get(id=response.json()["id"])
    assert (email.subject, email.html, email.template) == ("Welcome, <Alice>", "<p>Hi &lt;Alice&gt;</p>", "welcome")


def test_an_unknown_email_is_a_404(staff_browser):
    response = staff_browser.get("/dashboard/emails/00000000-0000-4000-8000-000000000000")

    assert response.status_code == 404
