"""Hostile input to POST /emails and /emails/batch: each attack, replayed as it was found, is a 400 naming the
field, answered in well under a second, with nothing stored."""

import json
import time

import pytest
from django.core.mail.message import sanitize_address
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from emails.models import Email, Template
from emails.parsers import MAX_JSON_DEPTH, nested_deeper_than
from emails.services.sending import build_message
from providers.smtp import envelope_address, message_bytes
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db

# Far above what these requests take (milliseconds), far below what the attacks took (seconds): a request
# slower than this is one an attacker can make slow.
BOUND = 0.5  # seconds


def _post(client, body, path="/api/v1/emails", **headers):
    """The response and how long it took (the body is encoded beforehand, outside the time)."""
    raw = body if isinstance(body, str) else json.dumps(body)
    start = time.perf_counter()
    response = client.post(path, raw, content_type="application/json", **headers)
    return response, time.perf_counter() - start


def _refused(response, field: str) -> list:
    assert response.status_code == 400, response.content[:500]
    assert field in response.json(), response.content[:500]
    return response.json()[field]


def test_a_from_of_100k_spaces_is_a_400_in_milliseconds(alice):
    # As found: "a", 100,000 spaces, "!" held a web thread for 11.9 s.
    response, took = _post(alice, email_payload(**{"from": "a" + " " * 100_000 + "!"}))

    _refused(response, "from")
    assert took < BOUND
    assert not Email.objects.exists()


def test_a_from_of_1_mb_is_a_400_in_milliseconds(alice):
    response, took = _post(alice, email_payload(**{"from": "Shop" + " " * 1_000_000 + "<shop@example.com>"}))

    _refused(response, "from")
    assert took < BOUND


# 100 kB of each classic pathological shape, in every field of a body that takes strings.
PATHOLOGICAL = {
    "spaces": "a" + " " * 100_000 + "!",
    "angle brackets": "<" * 100_000,
    "quotes": '"' * 100_000,
    "backslashes": "\\" * 100_000,
    "comments": "(" * 100_000,
    "at signs": "a@" * 50_000,
    "dots": "a." * 50_000 + "@",
    "encoded words": "=?utf-8?q?a?= " * 7_000,
    "spaces then an address": " " * 100_000 + "<a@example.com>",
}
FIELDS = [
    # (what, the field named in the answer, the body's fields holding the value)
    ("from", "from", lambda v: {"from": v}),
    ("to", "to", lambda v: {"to": [v]}),
    ("cc", "cc", lambda v: {"cc": [v]}),
    ("bcc", "bcc", lambda v: {"bcc": [v]}),
    ("reply_to", "reply_to", lambda v: {"reply_to": [v]}),
    ("subject", "subject", lambda v: {"subject": v}),
    ("header value", "headers", lambda v: {"headers": {"X-Note": v}}),
    ("header name", "headers", lambda v: {"headers": {v: "1"}}),
    ("Sender header", "headers", lambda v: {"headers": {"Sender": v}}),
    ("tag", "tags", lambda v: {"tags": [v]}),
    ("metadata value", "metadata", lambda v: {"metadata": {"order": v}}),
    ("metadata key", "metadata", lambda v: {"metadata": {v: "1"}}),
    ("template", "template", lambda v: {"template": v}),
    ("attachment filename", "attachments", lambda v: {"attachments": [{"filename": v, "content": "aGk="}]}),
    ("attachment content_type", "attachments",
     lambda v: {"attachments": [{"filename": "a.txt", "content": "aGk=", "content_type": v}]}),
    ("send_at", "send_at", lambda v: {"send_at": v}),
]  # fmt: skip


@pytest.mark.parametrize("shape", PATHOLOGICAL, ids=list(PATHOLOGICAL))
@pytest.mark.parametrize(("what", "field", "overrides"), FIELDS, ids=[f[0] for f in FIELDS])
def test_100_kb_of_a_pathological_shape_in_any_field_is_a_400_in_milliseconds(alice, what, field, overrides, shape):
    response, took = _post(alice, email_payload(**overrides(PATHOLOGICAL[shape])))

    _refused(response, field)
    assert took < BOUND
    assert not Email.objects.exists()


def test_a_batch_of_100_kb_addresses_answers_each_item_in_milliseconds(alice):
    bad = email_payload(**{"from": "a" + " " * 100_000 + "!"})
    body = {"emails": [bad] * 50 + [email_payload()]}

    response, took = _post(alice, body, "/api/v1/emails/batch")

    assert response.status_code == 202
    results = response.json()["results"]
    assert all("from" in result["errors"] for result in results[:50])
    assert results[50]["status"] == "PENDING"
    assert took < BOUND
    assert Email.objects.count() == 1


def test_a_metadata_key_with_a_lone_surrogate_is_a_400_naming_metadata(alice):
    # As found: JSON's "\ud800" escape in a key reached the insert, which cannot encode it: a 500.
    response, _ = _post(alice, email_payload(metadata={"\ud800": "x"}))

    _refused(response, "metadata")
    assert not Email.objects.exists()


def test_a_batch_answers_a_metadata_key_with_a_lone_surrogate_as_that_items_error(alice):
    body = {"emails": [email_payload(metadata={"order\udfff": "x"}), email_payload()]}

    response, _ = _post(alice, body, "/api/v1/emails/batch")

    assert response.status_code == 202
    first, second = response.json()["results"]
    assert "metadata" in first["errors"]
    assert second["status"] == "PENDING"
    assert Email.objects.count() == 1


def test_an_idempotency_key_of_100_kb_is_a_400_in_milliseconds(alice):
    response, took = _post(alice, email_payload(), HTTP_IDEMPOTENCY_KEY="k" + " " * 100_000)

    _refused(response, "Idempotency-Key")
    assert took < BOUND
    assert not Email.objects.exists()


def test_5000_reply_to_addresses_are_a_400(alice):
    # As found: 5,000 reply_to addresses were accepted.
    reply_to = [f"help{n}@example.com" for n in range(5_000)]

    response, took = _post(alice, email_payload(reply_to=reply_to))

    assert "50" in _refused(response, "reply_to")[0]
    assert took < BOUND
    assert not Email.objects.exists()


def test_50_reply_to_addresses_are_accepted(alice):
    response, _ = _post(alice, email_payload(reply_to=[f"help{n}@example.com" for n in range(50)]))

    assert response.status_code == 202


def test_5000_recipients_in_to_are_a_400_before_any_is_parsed(alice):
    response, took = _post(alice, email_payload(to=["a" + " " * 1_000 + "!"] * 5_000))

    _refused(response, "to")
    assert took < BOUND


def _nested(depth: int, kind: str) -> str:
    opening, closing = ("[", "]") if kind == "arrays" else ('{"a":', "}")
    return opening * depth + "1" + closing * depth


@pytest.mark.parametrize("kind", ["arrays", "objects"])
@pytest.mark.parametrize("path", ["/api/v1/emails", "/api/v1/emails/batch"])
def test_json_nested_100000_deep_is_a_400_in_json(alice, kind, path):
    # As found: an HTML 500 (Python's json module recursed until RecursionError).
    response, took = _post(alice, _nested(100_000, kind), path)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in response.json()["detail"]
    assert took < BOUND
    assert not Email.objects.exists()


@pytest.mark.parametrize("charset", ["base64", "zlib", "rot13", "hex"])
def test_a_json_body_declaring_a_charset_that_is_no_text_encoding_is_a_400_in_json(alice, charset):
    # As found by review: Django takes any codec Python knows, and decoding with it raised LookupError (a 500).
    response = alice.post("/api/v1/emails", b'{"to": []}', content_type=f"application/json; charset={charset}")

    assert response.status_code == 400
    assert "is not a text encoding" in response.json()["detail"]


def test_json_nested_100000_deep_in_utf_16_is_a_400_in_json(alice):
    body = _nested(100_000, "arrays").encode("utf-16")

    start = time.perf_counter()
    response = alice.post("/api/v1/emails", body, content_type="application/json; charset=utf-16")
    took = time.perf_counter() - start

    assert response.status_code == 400
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in response.json()["detail"]
    assert took < BOUND


def test_json_opened_100000_deep_and_never_closed_is_a_400_in_json(alice):
    response, took = _post(alice, '{"emails": ' + "[" * 100_000)

    assert response.status_code == 400
    assert "detail" in response.json()
    assert took < BOUND


def test_json_of_32_levels_is_accepted_and_33_refused(alice):
    Template.objects.create(name="plain", subject="Hi", text="Hi")  # a context needs a template

    def body(depth: int) -> str:  # the body is level 1, context level 2
        payload = json.dumps(email_payload(template="plain"))
        return payload[:-1] + ', "context": ' + _nested(depth - 1, "objects") + "}"

    accepted, _ = _post(alice, body(MAX_JSON_DEPTH))
    refused, _ = _post(alice, body(MAX_JSON_DEPTH + 1))

    assert accepted.status_code == 202, accepted.content
    assert refused.status_code == 400
    assert "detail" in refused.json()


def test_brackets_inside_strings_do_not_count_as_nesting(alice):
    text = '[{"quoted \\" [[[' * 100 + "\\\\"

    response, _ = _post(alice, email_payload(text=text))

    assert response.status_code == 202
    assert Email.objects.get().text == text


JSON_VALUES = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text('[]{}"\\', max_size=3), children),
    max_leaves=60,
)


def _depth(value) -> int:
    if isinstance(value, list | dict):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max(map(_depth, children), default=0)
    return 0


@settings(max_examples=300, deadline=None, database=None)
@given(value=JSON_VALUES, limit=st.integers(0, 6), ascii_only=st.booleans())
def test_the_nesting_check_agrees_with_the_depth_of_any_json(value, limit, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)

    assert nested_deeper_than(text.encode(), limit) == (_depth(value) > limit)


# Headers only a relay, a signer, this service or a provider's API may set.
TRUSTED_HEADERS = [
    "Received", "DKIM-Signature", "X-SMTPAPI", "Return-Path", "ARC-Seal", "ARC-Message-Signature",
    "Authentication-Results", "X-Mailservice-Id", "X-Mailgun-Variables", "X-PM-Message-Stream",
    "X-SES-Configuration-Set", "X-MC-Tags", "X-MJ-CustomID", "received", "dkim-signature",
]  # fmt: skip


@pytest.mark.parametrize("name", TRUSTED_HEADERS)
def test_a_header_only_a_relay_signer_or_provider_sets_is_a_400_naming_it(alice, name):
    # As found: Received, DKIM-Signature and X-SMTPAPI passed through as custom headers.
    response, _ = _post(alice, email_payload(headers={"X-Campaign": "spring", name: "by evil.test"}))

    assert name in str(_refused(response, "headers"))
    assert not Email.objects.exists()


def test_a_header_name_ending_in_a_line_feed_is_a_400(alice):
    # The name pattern's `$` matched before a final line feed: the message got a line of its own.
    response, _ = _post(alice, email_payload(headers={"X-Campaign\n": "spring"}))

    _refused(response, "headers")
    assert not Email.objects.exists()


def test_threading_headers_and_sender_stay_the_clients_to_set(alice):
    headers = {
        "Message-ID": "<order-1234@example.com>",
        "In-Reply-To": "<order-1233@example.com>",
        "References": "<order-1232@example.com> <order-1233@example.com>",
        "Date": "Mon, 23 Nov 2026 08:00:00 +0000",
        "Sender": "Shop <shop@example.com>",
    }

    response, _ = _post(alice, email_payload(headers=headers))

    assert response.status_code == 202, response.content
    assert response.json()["headers"] == headers


# Each accepted before, then refused by the backend at every attempt: what Django's sanitize_address (the
# header, the envelope) cannot write.
UNSENDABLE = {
    "encoded newline in the name": '"=?utf-8?q?Shop=0ABcc:_victim@example.org?=" <shop@example.com>',
    "encoded CR LF in the name": '"=?utf-8?b?U2hvcA0KQmNjOiB2QGV4YW1wbGUub3Jn?=" <shop@example.com>',
    # A long s (U+017F), which Django's validator, ignoring case, reads as an s.
    "non-ASCII in the local part": "\u017fhop@example.com",
    "a domain label too long for IDNA": "Shop <shop@" + "é" * 60 + ".example>",
}


@pytest.mark.parametrize("address", UNSENDABLE.values(), ids=list(UNSENDABLE))
@pytest.mark.parametrize("field", ["from", "to", "reply_to"])
def test_an_address_the_backend_cannot_write_is_a_400_at_submit(alice, field, address):
    # As found: accepted with a 202, then retried 5 times as if the failure were transient.
    value = address if field == "from" else [address]

    response, took = _post(alice, email_payload(**{field: value}))

    _refused(response, field)
    assert took < BOUND
    assert not Email.objects.exists()


@pytest.mark.parametrize("name", [name for name in UNSENDABLE if name != "non-ASCII in the local part"])
def test_those_addresses_are_what_the_backend_refuses(name):
    # (the non-ASCII local part it writes as an encoded word: another address)
    with pytest.raises(ValueError):
        sanitize_address(UNSENDABLE[name], "utf-8")


def test_an_unsendable_sender_header_is_a_400_naming_it(alice):
    response, _ = _post(alice, email_payload(headers={"Sender": UNSENDABLE["encoded newline in the name"]}))

    assert "Sender" in str(_refused(response, "headers"))


def test_an_address_nested_400_parentheses_deep_is_a_400_not_a_500(alice):
    # The header parser behind sanitize_address recurses once per nested comment: bounded before any parser runs.
    response, took = _post(alice, email_payload(**{"from": "(" * 390 + "Shop) <shop@example.com>"}))

    _refused(response, "from")
    assert took < BOUND


# Runs of what address and header parsers find hard, each up to 20,000 long: up to 100 kB in all.
PIECES = [
    " ", "<", ">", '"', "\\", "(", ")", "@", ".", ",", ":", ";", "[", "]", "=?utf-8?q?", "=?utf-8?b?", "?=", "=0A",
    "a", "Zoë", "\u2028", "\t", "shop@example.com", "Shop <shop@example.com>", '"Shop, Inc." ',
]  # fmt: skip
RUNS = st.lists(
    st.tuples(st.sampled_from(PIECES), st.integers(1, 20_000) | st.integers(1, 3)), min_size=1, max_size=8
).map(lambda runs: "".join(piece * count for piece, count in runs)[:100_000])
HOSTILE_STRINGS = (
    RUNS
    | st.text(max_size=500)
    # A hostile display name before a valid address, to reach the parsers behind the address pattern.
    | st.tuples(RUNS | st.text(max_size=50), st.emails()).map(lambda name_addr: "{} <{}>".format(*name_addr))
)
ADDRESS_AND_HEADER_FIELDS = [f for f in FIELDS if f[1] in {"from", "to", "cc", "bcc", "reply_to", "headers"}]


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(where=st.sampled_from(ADDRESS_AND_HEADER_FIELDS), value=HOSTILE_STRINGS)
def test_no_address_or_header_value_up_to_100_kb_is_slow_or_stored_when_refused(alice, where, value):
    what, field, overrides = where
    before = Email.objects.count()

    response, took = _post(alice, email_payload(**overrides(value)))

    assert took < BOUND, (what, len(value))
    event(f"{response.status_code}, {'over' if len(value) > 400 else 'up to'} 400 characters")
    if response.status_code == 202:
        # Accepted means sendable: the message and its envelope can be written as the SMTP backend writes them.
        email = Email.objects.get(id=response.json()["id"])
        message = build_message(email)
        message_bytes(message)
        for address in [message.from_email, *message.recipients()]:
            envelope_address(address, "utf-8")
    else:
        _refused(response, field)
        assert Email.objects.count() == before
