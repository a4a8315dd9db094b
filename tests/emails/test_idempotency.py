"""Idempotency-Key: a retried request never sends an email twice, even when the retries race."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from emails.models import Email
from tests.conftest import email_payload
from tests.processes import wait_for


def _post(client, key: str, **overrides):
    return client.post("/api/v1/emails", email_payload(**overrides), format="json", HTTP_IDEMPOTENCY_KEY=key)


@pytest.mark.django_db
def test_a_repeat_gets_the_same_email(alice):
    first = _post(alice, "order-1234")
    again = _post(alice, "order-1234")

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["id"] == first.json()["id"]
    assert again["Location"] == first["Location"]
    assert Email.objects.count() == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_a_422(alice):
    _post(alice, "order-1234")

    response = _post(alice, "order-1234", subject="Something else")

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert Email.objects.count() == 1


@pytest.mark.django_db
def test_keys_belong_to_their_api_key(alice, bob):
    assert _post(alice, "k").json()["id"] != _post(bob, "k").json()["id"]


@pytest.mark.django_db
def test_an_invalid_request_does_not_use_up_the_key(alice):
    assert _post(alice, "k", to=["bad@"]).status_code == 400

    assert _post(alice, "k").status_code == 202


@pytest.mark.django_db
def test_a_batch_is_idempotent_too(alice):
    body = {"emails": [email_payload(), email_payload()]}
    first = alice.post("/api/v1/emails/batch", body, format="json", HTTP_IDEMPOTENCY_KEY="batch-7")
    again = alice.post("/api/v1/emails/batch", body, format="json", HTTP_IDEMPOTENCY_KEY="batch-7")

    assert again.json() == first.json()
    assert Email.objects.count() == 2


def test_a_batch_whose_refused_item_quotes_nul_and_a_surrogate_is_stored_and_replayed(alice):
    # The results quote an item's unknown field names; stored for the replay, they must fit PostgreSQL.
    body = json.dumps({"emails": [email_payload(), {**email_payload(), "x\u0000\ud800": 1}]})
    first, again = (
        alice.post("/api/v1/emails/batch", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="odd")
        for _ in range(2)
    )

    assert first.status_code == again.status_code == 202
    results = first.json()["results"]
    assert "id" in results[0]
    assert results[1] == {"errors": {"x\\x00\\ud800": ["Unknown field."]}}
    assert again.json() == first.json()
    assert Email.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_duplicates_create_one_email_and_one_delivery(alice, sending_to_sink, services):
    services.worker()

    def submit(_):
        try:
            return _post(alice, "signup-42")
        finally:
            connections.close_all()  # each thread has its own database connection

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(submit, range(20)))

    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert Email.objects.count() == 1
    wait_for(lambda: Email.objects.filter(status="SENT").exists(), timeout=60, what="SENT")
    assert len(sending_to_sink.received) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/emails", "/api/v1/emails/batch"])
def test_an_idempotent_replay_says_so_with_idempotent_replayed(alice, path):
    body = email_payload() if path == "/api/v1/emails" else {"emails": [email_payload()]}

    first, again = (alice.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="order-77") for _ in range(2))

    assert "Idempotent-Replayed" not in first
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert "Idempotent-Replayed" not in alice.post(path, body, format="json")  # no key: nothing to replay
