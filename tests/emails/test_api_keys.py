"""Bearer keys: each key sees only its own emails; no key or a wrong one is a 401."""

from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from emails.authentication import KNOWN_KEY_SECONDS
from emails.models import ApiKey
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db


@pytest.fixture
def alices_email(alice) -> str:
    return alice.post("/api/v1/emails", email_payload(), format="json").json()["id"]


def test_it_hides_other_keys_emails(alices_email, bob):
    assert bob.get(f"/api/v1/emails/{alices_email}").status_code == 404
    assert bob.get("/api/v1/emails").json()["results"] == []


def test_it_shows_a_key_its_own_email(alices_email, alice):
    response = alice.get(f"/api/v1/emails/{alices_email}")

    assert response.status_code == 200
    assert response.json()["id"] == alices_email


def test_it_answers_404_for_an_unknown_id(alice):
    assert alice.get("/api/v1/emails/00000000-0000-0000-0000-000000000000").status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer ms_wrong", "Bearer", "Token ms_wrong", "Bearer two parts"],
    ids=["no key", "wrong key", "no key after Bearer", "other scheme", "extra words"],
)
def test_it_refuses_requests_without_a_valid_key(alices_email, authorization):
    client = APIClient()
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)

    for response in (
        client.get(f"/api/v1/emails/{alices_email}"),
        client.get("/api/v1/emails"),
        client.post("/api/v1/emails", email_payload(), format="json"),
    ):
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_refuses_a_revoked_key(alice):
    ApiKey.objects.filter(id=alice.api_key.id).update(revoked_at=timezone.now())

    assert alice.get("/api/v1/emails").status_code == 401


def test_create_api_key_prints_a_working_key_and_stores_only_its_hash(capsys):
    call_command("create_api_key", "billing")

    key = capsys.readouterr().out.strip().splitlines()[-1]
    stored = ApiKey.objects.get(name="billing")
    assert key not in (stored.key_hash, stored.prefix)
    assert stored.key_hash == ApiKey.hash(key)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/emails").status_code == 200


def test_a_malformed_id_is_a_json_404(alice):
    response = alice.get("/api/v1/emails/not-a-uuid")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_a_key_revoked_while_in_use_stops_working_within_seconds(alice):
    assert alice.get("/api/v1/emails").status_code == 200
    ApiKey.objects.filter(id=alice.api_key.id).update(revoked_at=timezone.now())

    with time_machine.travel(timezone.now() + timedelta(seconds=KNOWN_KEY_SECONDS + 1)):
        assert alice.get("/api/v1/emails").status_code == 401


@pytest.mark.parametrize(
    ("authorization", "says"),
    [
        (None, "No API key: send it as `Authorization: Bearer <key>`."),
        ("Basic dXNlcjpwdw==", "The Authorization header uses the 'Basic' scheme: send the API key as "
                               "`Authorization: Bearer <key>`."),
        ("Token ms_secret", "The Authorization header uses the 'Token' scheme: send the API key as "
                            "`Authorization: Bearer <key>`."),
        ("ms_secret", "The Authorization header has no scheme: send the API key as `Authorization: Bearer <key>`."),
        ("ms_secret ms_secret", "The Authorization header uses another scheme: send the API key as "
                                "`Authorization: Bearer <key>`."),
    ],
    ids=["no header", "basic", "token", "a bare key", "a key for a scheme"],
)  # fmt: skip
def test_a_401_says_which_scheme_to_use(db, authorization, says):
    client = APIClient()
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)

    response = client.get("/api/v1/emails")

    assert response.status_code == 401
    assert response.json() == {"detail": says}  # the scheme's name at most: never what was sent as a key
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_401_for_a_wrong_key_says_it_is_unknown_or_revoked(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer ms_wrong")

    response = client.post("/api/v1/emails", email_payload(), format="json")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API key: unknown, or revoked."}
