"""Only staff see the dashboard, its JSON and the admin: others are sent to the login page or refused."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import User

from emails.models import Email
from tests.conftest import make_emails

pytestmark = pytest.mark.django_db

PAGES = ["/dashboard/", "/admin/", "/admin/emails/email/"]
JSON = ["/dashboard/data", f"/dashboard/emails/{uuid.uuid4()}"]


@pytest.fixture
def clerk(client):
    """Logged in, active, but not staff."""
    client.force_login(User.objects.create_user("clerk", password="pw"))
    return client


@pytest.mark.parametrize("path", PAGES)
def test_an_anonymous_user_is_sent_to_the_login_page(client, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("path", PAGES)
def test_a_user_who_is_not_staff_is_sent_to_the_login_page(clerk, path):
    response = clerk.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("path", JSON)
def test_the_json_refuses_anonymous_and_non_staff_users(client, path):
    assert client.get(path).status_code == 403
    client.force_login(User.objects.create_user("clerk", password="pw"))
    assert client.get(path).status_code == 403


def test_the_send_form_refuses_a_non_staff_user_and_stores_nothing(clerk):
    response = clerk.post("/dashboard/emails", {"from": "a@example.com", "to": ["b@example.org"], "subject": "s",
                                                 "text": "t"}, content_type="application/json")  # fmt: skip

    assert response.status_code == 403
    assert not Email.objects.exists()


def test_an_email_progress_is_not_shown_to_a_non_staff_user(clerk):
    [email_id] = make_emails(1)

    response = clerk.get(f"/dashboard/emails/{email_id}")

    assert response.status_code == 403
    assert email_id not in response.content.decode()


def test_staff_get_the_dashboard(operator):
    assert operator.get("/dashboard/").status_code == 200
    assert operator.get("/dashboard/data").status_code == 200
