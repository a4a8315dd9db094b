"""The suppressions API: a key lists, adds and lifts its own suppressions; a suppression stops that key's emails
to the address and no other key's; a provider's bounce suppresses for the key whose email bounced; another key's
suppressions, and an operator's for every key, are invisible and not the key's to lift. The list pages as the
emails list does."""

import base64

import pytest

from emails.models import Email, Suppression
from emails.services import email_record_delivery_event, email_send
from tests.conftest import email_payload, make_due

pytestmark = pytest.mark.django_db


def _suppress(client, address="bob@example.org", **body):
    return client.post("/api/v1/suppressions", {"address": address, **body}, format="json")


def _send(client, to="bob@example.org") -> Email:
    email_id = client.post("/api/v1/emails", email_payload(to=[to]), format="json").json()["id"]
    make_due(email_id)
    email_send(email_id)
    return Email.objects.get(id=email_id)


def test_a_keys_suppression_stops_its_own_email_and_not_another_keys(alice, bob, sending_to_sink):
    assert _suppress(alice, reason="asked us to stop").status_code == 201

    stopped, sent = _send(alice), _send(bob)

    assert (stopped.status, stopped.last_error) == ("FAILED", "suppressed")
    assert sent.status == "SENT"
    assert [message.rcpt_tos for message in sending_to_sink.received] == [["bob@example.org"]]
    assert sending_to_sink.count_by_id() == {str(sent.id): 1}


def test_lifting_a_suppression_lets_the_keys_email_through_again(alice, sending_to_sink):
    _suppress(alice)

    response = alice.delete("/api/v1/suppressions/Bob@Example.org")

    assert response.status_code == 204
    assert _send(alice).status == "SENT"
    assert alice.get("/api/v1/suppressions").json() == {"results": [], "next": None}


def test_it_lists_the_keys_suppressions_newest_first_with_their_source(alice):
    alice.post("/api/v1/emails", email_payload(to=["carol@example.org"]), format="json")
    email = Email.objects.get()
    Email.objects.filter(id=email.id).update(status="SENT", provider="mailgun", provider_message_id="<m1@x>")
    email_record_delivery_event(
        provider_message_id="<m1@x>", event_type="bounced", recipient="carol@example.org", at=None, detail="550 gone"
    )
    _suppress(alice, "Dave@Example.ORG", reason="by phone")

    results = alice.get("/api/v1/suppressions").json()["results"]

    assert [(s["address"], s["source"], s["reason"]) for s in results] == [
        ("dave@example.org", "api", "by phone"),
        ("carol@example.org", "bounce", "550 gone"),
    ]
    assert all(s["created_at"].endswith("Z") for s in results)


def test_adding_an_address_twice_answers_the_first_suppression(alice):
    first = _suppress(alice, reason="first")

    again = _suppress(alice, "BOB@example.org", reason="second")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert first.json()["reason"] == "first"
    assert Suppression.objects.count() == 1


@pytest.mark.parametrize(
    "address", ["Bob <bob@example.org>", "not an address", "bob@", "a" * 310 + "@example.org", 42, ""]
)
def test_what_is_not_an_address_alone_is_refused_naming_address(alice, address):
    response = _suppress(alice, address)

    assert response.status_code == 400
    assert list(response.json()) == ["address"]
    assert not Suppression.objects.exists()


def test_another_keys_and_the_operators_suppressions_are_invisible_and_not_lifted(alice, bob):
    _suppress(bob)
    Suppression.objects.create(address="eve@example.org", reason="complained")  # an operator's, for every key

    assert alice.get("/api/v1/suppressions").json() == {"results": [], "next": None}
    assert alice.delete("/api/v1/suppressions/bob@example.org").status_code == 404
    assert alice.delete("/api/v1/suppressions/eve@example.org").status_code == 404
    assert Suppression.objects.count() == 2


def test_lifting_an_unknown_address_is_a_404(alice):
    response = alice.delete("/api/v1/suppressions/nobody@example.org")

    assert response.status_code == 404
    assert response.json() == {"detail": "No such suppression."}


def test_a_bounce_suppresses_for_the_key_whose_email_bounced_only(alice, bob, sending_to_sink):
    bounced = _send(alice)
    email_record_delivery_event(
        provider_message_id=bounced.provider_message_id,
        event_type="bounced",
        recipient="bob@example.org",
        at=None,
        detail="550 5.1.1 no such user",
    )

    assert (_send(alice).last_error, _send(bob).status) == ("suppressed", "SENT")
    assert [s["source"] for s in alice.get("/api/v1/suppressions").json()["results"]] == ["bounce"]
    assert bob.get("/api/v1/suppressions").json() == {"results": [], "next": None}


def test_suppressions_need_a_key(client):
    assert client.get("/api/v1/suppressions").status_code == 401
    assert client.post("/api/v1/suppressions", {"address": "bob@example.org"}, format="json").status_code == 401


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def test_it_pages_through_every_suppression_once_newest_first_and_none_of_another_keys(alice, bob):
    addresses = [f"user{n}@example.org" for n in range(7)]
    for address in addresses:
        _suppress(alice, address)
        _suppress(bob, f"bob-{address}")
    _suppress(bob, addresses[1])
    Suppression.objects.create(address="eve@example.org", reason="complained")  # an operator's, for every key
    # Three made at the same instant: a page boundary falls among them, where only the id orders them.
    tied = Suppression.objects.get(api_key=alice.api_key, address=addresses[3]).created_at
    Suppression.objects.filter(api_key=alice.api_key, address__in=addresses[2:5]).update(created_at=tied)

    seen, url, pages = [], "/api/v1/suppressions?limit=3", 0
    while url:
        response = alice.get(url)
        assert response.status_code == 200
        seen += [s["address"] for s in response.json()["results"]]
        url, pages = response.json()["next"], pages + 1
        assert url is None or url.startswith("http://testserver/api/v1/suppressions?")

    assert seen == addresses[::-1]
    assert pages == 3


def test_a_page_holds_fifty_unless_a_limit_says_otherwise(alice):
    Suppression.objects.bulk_create(
        Suppression(api_key=alice.api_key, address=f"user{n}@example.org") for n in range(51)
    )

    first = alice.get("/api/v1/suppressions").json()

    assert len(first["results"]) == 50
    assert len(alice.get(first["next"]).json()["results"]) == 1
    assert len(alice.get("/api/v1/suppressions", {"limit": 500}).json()["results"]) == 51


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor",
        "A" * 129,
        _cursor("2025-06-01"),
        _cursor("2025-06-01T12:00:00+00:00|00000000-0000-4000-8000-000000000000"),  # an email's
    ],
    ids=["empty", "spaces", "too-long", "no-id", "an-emails"],
)
def test_a_cursor_the_list_did_not_write_is_a_400_naming_cursor(alice, cursor):
    _suppress(alice)

    response = alice.get("/api/v1/suppressions", {"cursor": cursor})

    assert response.status_code == 400
    assert list(response.json()) == ["cursor"]


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 501}, {"limit": ""}, {"page": 2}])
def test_a_bad_limit_or_an_unknown_parameter_is_a_400_naming_it(alice, query):
    response = alice.get("/api/v1/suppressions", query)

    assert response.status_code == 400
    assert list(response.json()) == list(query)
