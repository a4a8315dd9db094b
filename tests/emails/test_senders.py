"""Sender limits: a key limited to its senders cannot send as anyone else, through From, Sender or the
envelope, by any door (issue 13, point 3: `PayPal Security <security@paypal.com>` was accepted)."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from emails.models import ApiKey, Email
from emails.services import api_key_create, email_send
from tests.conftest import email_payload, make_emails

pytestmark = pytest.mark.django_db

PAYPAL = "PayPal Security <security@paypal.com>"


def _client(name: str, senders: list[str]) -> APIClient:
    api_key, key = api_key_create(name=name, senders=senders)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    client.api_key = api_key
    return client


@pytest.fixture
def shop(db) -> APIClient:
    """A key limited to a domain and to one address at another."""
    return _client("shop", ["example.com", "ops@other.org"])


def _send(client: APIClient, **overrides):
    return client.post("/api/v1/emails", email_payload(**overrides), format="json")


def test_a_key_limited_to_example_com_sending_as_paypal_security_is_a_400_naming_from(shop):
    response = _send(shop, **{"from": PAYPAL})

    assert response.status_code == 400
    assert list(response.json()) == ["from"]
    [message] = response.json()["from"]
    assert "'security@paypal.com'" in message and "example.com, ops@other.org" in message
    assert not Email.objects.exists()


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"Sender": "security@paypal.com"}, "from"),
        ({"sender": "PayPal Security <security@paypal.com>"}, "from"),
        ({"Resent-From": "security@paypal.com"}, "from"),
        ({"Resent-Sender": "security@paypal.com"}, "from"),
        # Not one address: refused as a header value before any sender is compared.
        ({"Sender": "shop@example.com, security@paypal.com"}, "headers"),
        ({"Sender": "security@paypal.com <shop@example.com>"}, "headers"),
        ({"Sender": "not an address"}, "headers"),
        ({"Sender": ""}, "headers"),
    ],
    ids=["bare", "lower-case name", "Resent-From", "Resent-Sender", "second address", "address in the name",
         "not an address", "empty"],
)  # fmt: skip
def test_an_allowed_from_with_a_sender_header_of_paypal_is_a_400(shop, headers, named):
    response = _send(shop, **{"from": "Shop <shop@example.com>", "headers": headers})

    assert response.status_code == 400
    # The contract names `from` for every sender the key may not use, the header ones included.
    assert list(response.json()) == [named]
    assert not Email.objects.exists()


@pytest.mark.parametrize(
    ("from_", "headers"),
    [
        ("Shop <shop@example.com>", {}),
        ("anyone@example.com", {"Sender": "Bounces <bounces@example.com>", "X-Campaign": "security@paypal.com"}),
        ("SHOP@EXAMPLE.COM", {}),
        ("ops@other.org", {"Sender": "Ops <OPS@Other.Org>"}),
        ("Ops <Ops@OTHER.org>", {}),
    ],
    ids=["allowed domain", "allowed Sender, other headers free", "upper-case domain", "allowed address",
         "allowed address, other case"],
)  # fmt: skip
def test_an_allowed_domain_or_address_is_accepted(shop, from_, headers):
    response = _send(shop, **{"from": from_, "headers": headers})

    assert response.status_code == 202, response.json()
    assert Email.objects.get().from_email == from_


@pytest.mark.parametrize(
    "from_",
    [
        "a@example.com.evil.org",  # the allowed domain as a prefix
        "a@evil-example.com",  # as a suffix of another name
        "a@sub.example.com",  # a subdomain: may be someone else's (delegated, CNAMEd to a hosted shop)
        "a@example.co",
        "a@example.com.",  # a trailing dot: not an address we accept at all
        "other@other.org",  # an allowed address does not allow its domain
        "ops@sub.other.org",
        '"ops@other.org"@evil.org',  # the allowed address quoted as a local part
        '"a@example.com" <security@paypal.com>',  # the allowed domain in the display name
        "a@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",  # fullwidth "example", which IDNA 2003 maps to ASCII
    ],
)
def test_a_lookalike_of_an_allowed_sender_is_a_400_naming_from(shop, from_):
    response = _send(shop, **{"from": from_})

    assert response.status_code == 400
    assert list(response.json()) == ["from"]
    assert not Email.objects.exists()


def test_an_international_domain_matches_its_punycode_form_and_no_other(db):
    bookshop = _client("bookshop", ["BÜCHER.example", "xn--strae-oqa.de"])
    assert ApiKey.objects.get(id=bookshop.api_key.id).senders == ["xn--bcher-kva.example", "xn--strae-oqa.de"]

    for allowed in ("a@bücher.example", "a@xn--bcher-kva.example", "A@BÜCHER.EXAMPLE"):
        assert _send(bookshop, **{"from": allowed}).status_code == 202, allowed
    # IDNA 2003 (Django's encoding) turns straße.de into strasse.de, another domain than xn--strae-oqa.de.
    for refused in ("a@straße.de", "a@strasse.de"):
        assert list(_send(bookshop, **{"from": refused}).json()) == ["from"], refused


def test_a_key_without_senders_may_send_as_anyone(alice):
    assert ApiKey.objects.get(id=alice.api_key.id).senders == []

    assert _send(alice, **{"from": PAYPAL, "headers": {"Sender": "security@paypal.com"}}).status_code == 202


def test_an_email_created_without_a_key_by_our_own_tools_is_not_limited(db):
    [email_id] = make_emails(1, **{"from": PAYPAL, "headers": {"Sender": "security@paypal.com"}})

    assert Email.objects.get(id=email_id).from_email == PAYPAL


def test_a_batch_with_one_foreign_sender_stores_the_others_and_answers_its_error(shop):
    emails = [email_payload(), email_payload(**{"from": PAYPAL}), email_payload(headers={"Sender": PAYPAL})]
    emails.append(email_payload(**{"from": "ops@other.org"}))

    response = shop.post("/api/v1/emails/batch", {"emails": emails}, format="json")

    assert response.status_code == 202
    results = response.json()["results"]
    assert [sorted(r.get("errors", {})) for r in results] == [[], ["from"], ["from"], []]
    assert Email.objects.count() == 2
    assert sorted(Email.objects.values_list("from_email", flat=True)) == ["Shop <shop@example.com>", "ops@other.org"]


def test_a_key_limited_after_the_fact_cannot_resend_as_paypal(alice):
    email_id = _send(alice, **{"from": PAYPAL}).json()["id"]
    ApiKey.objects.filter(id=alice.api_key.id).update(senders=["example.com"])

    response = alice.post(f"/api/v1/emails/{email_id}/resend")

    assert response.status_code == 400
    assert list(response.json()) == ["from"]
    assert Email.objects.count() == 1


def test_the_envelope_sender_is_the_checked_from_whatever_the_headers_say(shop, sending_to_sink):
    email_id = _send(shop, **{"from": "Shop <shop@example.com>", "headers": {"Sender": "bounces@example.com"}})
    email_send(email_id.json()["id"])

    [received] = sending_to_sink.received
    assert received.mail_from == "shop@example.com"
    assert received.message["From"] == "Shop <shop@example.com>"
    assert received.message["Sender"] == "bounces@example.com"


def test_create_api_key_with_senders_prints_the_key_last_and_stores_the_senders(capsys):
    call_command("create_api_key", "billing", "--sender", "Example.com", "--sender", "ops@other.org")

    out, err = capsys.readouterr()
    key = out.strip().splitlines()[-1]
    stored = ApiKey.objects.get(name="billing")
    assert stored.key_hash == ApiKey.hash(key)
    assert stored.senders == ["example.com", "ops@other.org"]
    assert "example.com, ops@other.org" in out
    assert "any address" not in out + err


def test_create_api_key_without_a_sender_warns_that_the_key_may_send_from_any_address(capsys):
    call_command("create_api_key", "billing")

    out, err = capsys.readouterr()
    assert "may send from any address" in err
    assert ApiKey.hash(out.strip().splitlines()[-1]) == ApiKey.objects.get(name="billing").key_hash
    assert ApiKey.objects.get(name="billing").senders == []


@pytest.mark.parametrize(
    "sender",
    ["*.example.com", "http://example.com", "example", "a b.com", "@example.com", "ops@", "a@b@example.com",
     "a@straße.de", "x" * 100_000, "a" * 64 + "@" + "b" * 200 + ".com", ""],
    ids=["wildcard", "url", "one label", "space", "no local part", "no domain", "two @", "ambiguous IDN",
         "100k", "too long", "empty"],
)  # fmt: skip
def test_create_api_key_refuses_a_sender_that_is_not_a_domain_or_an_address_and_stores_no_key(sender):
    started = time.perf_counter()
    with pytest.raises(CommandError):
        call_command("create_api_key", "billing", "--sender", "example.com", "--sender", sender)

    assert time.perf_counter() - started < 0.5
    assert not ApiKey.objects.exists()


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "pw"))
    return client


def test_the_admin_edits_a_keys_senders_and_lists_them(operator, shop):
    change = f"/admin/emails/apikey/{shop.api_key.id}/change/"
    assert "ops@other.org" in operator.get(change).content.decode()

    response = operator.post(change, {"name": "shop", "senders": "Example.com\r\nnews@Other.org, shop.example"})

    assert response.status_code == 302
    assert ApiKey.objects.get(id=shop.api_key.id).senders == ["example.com", "news@other.org", "shop.example"]
    listing = operator.get("/admin/emails/apikey/").content.decode()
    assert "example.com, news@other.org, shop.example" in listing


def test_the_admin_refuses_a_wildcard_sender_and_keeps_the_list(operator, shop):
    change = f"/admin/emails/apikey/{shop.api_key.id}/change/"

    response = operator.post(change, {"name": "shop", "senders": "*.paypal.com"})

    assert response.status_code == 200
    assert "is not a domain such as example.com" in response.content.decode()
    assert ApiKey.objects.get(id=shop.api_key.id).senders == ["example.com", "ops@other.org"]


def test_the_admin_lists_a_key_without_senders_as_sending_from_any_address(operator, alice):
    assert "any address" in operator.get("/admin/emails/apikey/").content.decode()
