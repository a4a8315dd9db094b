"""The send form is a door to send as any API key: it takes the permission to add emails, and sends as a key
the operator picks, under that key's senders and rate (the findings of issue 13, point 6, replayed)."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from emails.models import ApiKey, Email
from emails.services import api_key_create
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db

CEO = email_payload(**{"from": "CEO <ceo@bank.example>", "subject": "Urgent wire transfer"})


def _staff(client: Client, *codenames: str) -> Client:
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="emails", codename__in=codenames))
    client.force_login(user)
    return client


@pytest.fixture
def bare_staff(client) -> Client:
    """Staff, so it sees the dashboard, with no permission at all."""
    return _staff(client)


@pytest.fixture
def sender(client) -> Client:
    """Staff who may add emails."""
    return _staff(client, "add_email")


@pytest.fixture
def shop_key(db) -> ApiKey:
    """A key limited to its own domain."""
    api_key = api_key_create(name="shop")[0]
    ApiKey.objects.filter(id=api_key.id).update(senders=["shop.example"])
    api_key.refresh_from_db()
    return api_key


def _post(client: Client, body: dict):
    return client.post("/dashboard/emails", body, content_type="application/json")


def test_a_staff_user_with_no_permissions_sending_as_the_ceo_is_a_403_and_stores_nothing(bare_staff, alice):
    response = _post(bare_staff, {**CEO, "api_key": alice.api_key.id})

    assert response.status_code == 403
    assert "add emails" in response.json()["detail"]
    assert not Email.objects.exists()


def test_a_staff_user_with_no_permissions_gets_neither_the_form_nor_the_keys(bare_staff, alice):
    page = bare_staff.get("/dashboard/").content.decode()

    assert 'id="send-form"' not in page and 'id="send-refused"' in page
    assert bare_staff.get("/dashboard/api-keys").status_code == 403


def test_a_permitted_operator_sending_as_a_key_limited_to_other_senders_gets_that_keys_400(sender, shop_key):
    response = _post(sender, {**CEO, "api_key": shop_key.id})

    assert response.status_code == 400
    assert "from" in response.json()
    assert not Email.objects.exists()


def test_a_permitted_operator_sends_as_the_key_picked_and_the_email_is_recorded_as_that_keys(sender, shop_key):
    response = _post(sender, email_payload(**{"from": "Shop <orders@shop.example>"}, api_key=shop_key.id))

    assert response.status_code == 202
    assert Email.objects.get(id=response.json()["id"]).api_key_id == shop_key.id


def test_a_form_without_a_key_is_a_400_naming_api_key_and_stores_nothing(sender):
    response = _post(sender, CEO)

    assert response.status_code == 400
    assert list(response.json()) == ["api_key"]
    assert not Email.objects.exists()


def test_sending_as_a_revoked_key_is_a_400_naming_api_key(sender, alice):
    ApiKey.objects.filter(id=alice.api_key.id).update(revoked_at=timezone.now())

    response = _post(sender, {**email_payload(), "api_key": alice.api_key.id})

    assert response.status_code == 400
    assert "revoked" in response.json()["api_key"][0]
    assert not Email.objects.exists()


@pytest.mark.parametrize("api_key", ["9" * 100_000, " 1" * 50_000, 2**70, -1, 0, "1.5", True, None, [1], {"id": 1}, ""])
def test_a_key_id_that_is_no_key_is_a_400_naming_api_key_in_milliseconds(sender, alice, api_key):
    started = time.perf_counter()
    response = _post(sender, {**email_payload(), "api_key": api_key})
    elapsed = time.perf_counter() - started

    assert response.status_code == 400
    assert list(response.json()) == ["api_key"]
    assert elapsed < 0.2, f"{elapsed * 1000:.0f} ms"
    assert not Email.objects.exists()


def test_an_operator_cannot_send_past_the_keys_rate_through_the_form(sender, alice, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "2/day"}}
    as_alice = {**email_payload(), "api_key": alice.api_key.id}

    assert alice.get("/api/v1/emails").status_code == 200  # the key's own client spends one of its two
    assert _post(sender, as_alice).status_code == 202
    throttled = _post(sender, as_alice)

    assert throttled.status_code == 429
    assert 0 < int(throttled["Retry-After"]) <= 86400
    assert Email.objects.count() == 1
    assert alice.get("/api/v1/emails").status_code == 429  # one budget, whichever door spends it


def test_the_form_offers_the_active_keys_with_their_senders(sender, shop_key, alice):
    revoked = api_key_create(name="old")[0]
    ApiKey.objects.filter(id=revoked.id).update(revoked_at=timezone.now())

    keys = sender.get("/dashboard/api-keys").json()["results"]

    assert [(k["id"], k["name"], k["senders"]) for k in keys] == [
        (alice.api_key.id, "alice", []),
        (shop_key.id, "shop", ["shop.example"]),
    ]
    assert keys[0]["prefix"] == alice.api_key.prefix
    assert set(keys[0]) == {"id", "name", "prefix", "senders", "test"}  # never the hash
    assert keys[0]["test"] is False
