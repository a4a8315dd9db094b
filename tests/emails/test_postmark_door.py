"""The Postmark-compatible door, black box: a live gunicorn, and the clients Postmark's users already run,
pointed at it by their base URL only (django-anymail's Postmark backend, postmarker), plus raw HTTP for the
contract's error answers. Delivery goes through a real worker to an SMTP sink."""

from __future__ import annotations

import base64
import datetime
import json
import os
import uuid
from email.header import decode_header, make_header

import pytest
import requests
from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import connection
from django.utils import timezone
from postmarker.core import PostmarkClient

from emails.models import ApiKey, Email, Suppression
from emails.services import api_key_create
from tests.conftest import Services
from tests.processes import ROOT, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(500)
PDF = b"%PDF-1.4\n" + os.urandom(2000)
ANSWER_KEYS = {"To", "SubmittedAt", "MessageID", "ErrorCode", "Message"}


@pytest.fixture(scope="module")
def live(django_db_setup, tmp_path_factory) -> str:
    """One gunicorn for the module, on the test database (as the `services` fixture starts one per test): each
    test commits its own API key and rows, which the server sees, and the database is emptied after each."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mailservice.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),
    }
    running = Services(env, tmp_path_factory.mktemp("postmark-door"))
    try:
        yield running.web()
    finally:
        running.stop_all()


def _key(**kwargs) -> str:
    return api_key_create(name="postmark", **kwargs)[1]


def _post(live: str, path: str, body, *, key: str | None, **headers: str) -> requests.Response:
    headers = {"Accept": "application/json", **headers}
    if key is not None:
        headers["X-Postmark-Server-Token"] = key
    if isinstance(body, (bytes, str)):
        headers.setdefault("Content-Type", "application/json")
        return requests.post(f"{live}{path}", data=body, headers=headers, timeout=60)
    return requests.post(f"{live}{path}", json=body, headers=headers, timeout=60)


def _email(live: str, key: str, email_id: str) -> dict:
    """The email as GET /api/v1/emails/<id> shows it to the same key."""
    response = requests.get(f"{live}/api/v1/emails/{email_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 200, (email_id, response.status_code, response.text)
    return response.json()


def _wait_sent(live: str, key: str, email_id: str) -> dict:
    return wait_for(
        lambda: (shown := _email(live, key, email_id))["status"] == "SENT" and shown,
        timeout=60,
        what=f"email {email_id} to be SENT",
    )


def _message(**fields) -> dict:
    message = {"From": "Shop <shop@example.com>", "To": "alice@example.org", "Subject": "Your order",
               "TextBody": "Thank you for your order."}  # fmt: skip
    message.update(fields)
    return message


def _refused(response: requests.Response, status: int, error_code: int) -> str:
    """The Message of a Postmark error answer, once its status and ErrorCode are as expected."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"ErrorCode", "Message"}, body
    assert body["ErrorCode"] == error_code, body
    return body["Message"]


# django-anymail's Postmark backend


def _anymail(live: str, key: str, settings):
    """anymail's Postmark backend as its users configure it, with only the API URL pointed here."""
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": key, "POSTMARK_API_URL": f"{live}/"}
    return get_connection("anymail.backends.postmark.EmailBackend")


def test_anymail_sends_a_whole_message_that_arrives_at_the_sink_with_its_bcc_in_the_envelope_only(
    live, services, sending_to_sink, settings
):
    key = _key()
    services.worker()
    message = EmailMultiAlternatives(
        subject="Ihre Bestellung über 3 Artikel",
        body="Grüße! Your order is on its way.",
        from_email="Shop <shop@example.com>",
        to=["Alice <alice@example.org>"],
        cc=["carol@example.org"],
        bcc=["dave@example.org"],
        reply_to=["Support <support@example.com>"],
        headers={"X-Order": "42"},
        connection=_anymail(live, key, settings),
    )
    message.attach_alternative("<p>Grüße! Your order is on its way.</p>", "text/html")
    message.attach("invoice.pdf", PDF, "application/pdf")
    message.tags = ["order-shipped"]
    message.metadata = {"order": "1234"}

    assert message.send() == 1

    email_id = message.anymail_status.message_id
    assert uuid.UUID(email_id)
    assert message.anymail_status.status == {"sent"}
    shown = _wait_sent(live, key, email_id)
    assert (shown["to"], shown["cc"], shown["bcc"]) == (["Alice <alice@example.org>"], ["carol@example.org"],
                                                        ["dave@example.org"])  # fmt: skip
    assert (shown["tags"], shown["metadata"]) == (["order-shipped"], {"order": "1234"})

    [received] = [r for r in sending_to_sink.received if r.email_id == email_id]
    assert received.mail_from == "shop@example.com"
    assert sorted(received.rcpt_tos) == ["alice@example.org", "carol@example.org", "dave@example.org"]
    delivered = received.message
    assert delivered["From"] == "Shop <shop@example.com>"
    assert delivered["To"] == "Alice <alice@example.org>"
    assert delivered["Cc"] == "carol@example.org"
    assert delivered["Reply-To"] == "Support <support@example.com>"
    assert delivered["X-Order"] == "42"
    assert "Bcc" not in delivered
    assert "dave@example.org" not in received.raw.decode(errors="replace")
    assert str(make_header(decode_header(delivered["Subject"]))) == "Ihre Bestellung über 3 Artikel"
    parts = {part.get_content_type(): part for part in delivered.walk() if not part.is_multipart()}
    text = parts["text/plain"].get_payload(decode=True).decode(parts["text/plain"].get_content_charset())
    html = parts["text/html"].get_payload(decode=True).decode(parts["text/html"].get_content_charset())
    assert text.strip() == "Grüße! Your order is on its way."
    assert html.strip() == "<p>Grüße! Your order is on its way.</p>"
    assert parts["application/pdf"].get_payload(decode=True) == PDF
    assert parts["application/pdf"].get_filename() == "invoice.pdf"


def test_anymail_batch_send_makes_one_email_per_recipient_with_its_merged_metadata(live, settings):
    key = _key()
    recipients = ["alice@example.org", "bob@example.org", "carol@example.org"]
    message = EmailMultiAlternatives(
        subject="Spring sale", body="Hello!", from_email="shop@example.com", to=recipients,
        connection=_anymail(live, key, settings),
    )  # fmt: skip
    message.metadata = {"campaign": "spring"}
    message.merge_metadata = {address: {"customer": str(n)} for n, address in enumerate(recipients)}

    assert message.send() == 1

    statuses = message.anymail_status.recipients
    assert {address: statuses[address].status for address in recipients} == dict.fromkeys(recipients, "sent")
    ids = {address: statuses[address].message_id for address in recipients}
    assert len(set(ids.values())) == 3
    for n, address in enumerate(recipients):
        shown = _email(live, key, ids[address])
        assert shown["to"] == [address]
        assert shown["metadata"] == {"campaign": "spring", "customer": str(n)}
    assert Email.objects.count() == 3


def test_anymail_with_a_bad_token_raises_its_api_error_with_status_401(live, settings):
    message = EmailMultiAlternatives(
        "Hi", "Hello", "shop@example.com", ["alice@example.org"], connection=_anymail(live, "ms_not-a-key", settings)
    )
    with pytest.raises(AnymailAPIError) as refused:
        message.send()
    assert refused.value.status_code == 401
    assert Email.objects.count() == 0


def test_anymail_raises_recipients_refused_for_an_address_the_service_refuses(live, settings):
    # anymail itself refuses "not-an-address@" and "bad@@example.org" (AnymailInvalidAddress) before any request:
    # this address passes anymail's parser and only the service refuses it.
    message = EmailMultiAlternatives(
        "Hi", "Hello", "shop@example.com", ["alice@exa_mple.org"], connection=_anymail(live, _key(), settings)
    )
    with pytest.raises(AnymailRecipientsRefused):
        message.send()
    assert message.anymail_status.recipients["alice@exa_mple.org"].status == "invalid"
    assert Email.objects.count() == 0


# postmarker


def test_postmarker_sends_with_its_unused_fields_as_null_and_gets_the_email_id(live):
    key = _key()
    client = PostmarkClient(server_token=key, root_api_url=f"{live}/")

    answer = client.emails.send(
        From="Shop <shop@example.com>", To=["alice@example.org", "bob@example.org"], Subject="Your order",
        HtmlBody="<p>Thank you</p>",
    )  # fmt: skip

    assert answer["ErrorCode"] == 0
    shown = _email(live, key, answer["MessageID"])
    assert (shown["from"], shown["to"], shown["subject"], shown["html"], shown["text"]) == (
        "Shop <shop@example.com>", ["alice@example.org", "bob@example.org"], "Your order", "<p>Thank you</p>", ""
    )  # fmt: skip


def test_postmarker_send_batch_gets_one_email_id_per_message(live):
    key = _key()
    client = PostmarkClient(server_token=key, root_api_url=f"{live}/")

    answers = client.emails.send_batch(
        {"From": "shop@example.com", "To": "alice@example.org", "Subject": "One", "TextBody": "1"},
        {"From": "shop@example.com", "To": "bob@example.org", "Subject": "Two", "TextBody": "2", "Tag": "batch"},
    )

    assert [answer["ErrorCode"] for answer in answers] == [0, 0]
    shown = [_email(live, key, answer["MessageID"]) for answer in answers]
    assert [(s["to"], s["subject"], s["tags"]) for s in shown] == [
        (["alice@example.org"], "One", []), (["bob@example.org"], "Two", ["batch"])
    ]  # fmt: skip


# Raw HTTP: the contract's answers


def test_an_accepted_message_answers_postmarks_fields_exactly(live):
    key = _key()
    before = timezone.now()

    response = _post(live, "/email", _message(To="Alice <alice@example.org>, bob@example.org"), key=key)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == ANSWER_KEYS
    assert (answer["ErrorCode"], answer["Message"]) == (0, "OK")
    assert answer["To"] == "Alice <alice@example.org>, bob@example.org"
    submitted = datetime.datetime.fromisoformat(answer["SubmittedAt"])
    assert submitted.tzinfo is not None
    assert before - datetime.timedelta(seconds=5) <= submitted <= timezone.now() + datetime.timedelta(seconds=5)
    shown = _email(live, key, answer["MessageID"])
    assert (shown["id"], shown["status"]) == (answer["MessageID"], "PENDING")
    assert shown["to"] == ["Alice <alice@example.org>", "bob@example.org"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Postmark-Server-Token": "ms_not-a-key"}, {"X-Postmark-Server-Token": ""}],
    ids=["missing", "bad", "empty"],
)
def test_a_missing_or_bad_server_token_is_401_with_error_code_10(live, headers):
    key = _key()
    for bearer in ({}, {"Authorization": f"Bearer {key}"}):  # the REST API's header is not the door's
        response = requests.post(f"{live}/email", json=_message(), headers={**headers, **bearer}, timeout=10)
        _refused(response, 401, 10)
        batch = requests.post(f"{live}/email/batch", json=[_message()], headers={**headers, **bearer}, timeout=10)
        _refused(batch, 401, 10)
    assert Email.objects.count() == 0


def test_a_revoked_key_is_401_with_error_code_10(live):
    api_key, key = api_key_create(name="revoked")
    api_key.revoked_at = timezone.now()
    api_key.save()
    _refused(_post(live, "/email", _message(), key=key), 401, 10)


@pytest.mark.parametrize(
    ("message", "named"),
    [
        ({"To": "alice@example.org", "Subject": "Hi", "TextBody": "Hi"}, "From"),
        (_message(From="not an address"), "From"),
        (_message(To=None), "To"),
        (_message(To="alice@example.org, bob@exa_mple.org"), "To"),
        (_message(Cc="carol@"), "Cc"),
        (_message(Subject="two\nlines"), "Subject"),
        (_message(Subject="s" * 999), "Subject"),
        (_message(Subject=42), "Subject"),
        (_message(TextBody=None), "TextBody"),  # no body at all: named by a body field
        (_message(TextBody=["Hi"]), "TextBody"),
        (_message(Headers=[{"Name": "Received", "Value": "from x"}]), "Headers"),
        (_message(Headers={"X-A": "1"}), "Headers"),
        (
            _message(Attachments=[{"Name": "a.pdf", "Content": "not base64!", "ContentType": "application/pdf"}]),
            "Attachments",
        ),
        (_message(Tag="a\nb"), "Tag"),
        (_message(Metadata={"order": 1234}), "Metadata"),
        # JSON's \ud800 escape: a lone surrogate, which the answer quoting it could not write as UTF-8 (a 500).
        (_message(To="ann\ud800@example.org"), "To"),
        (_message(From="shop\udfff@example.com"), "From"),
        (_message(Metadata={"order\ud800": "1"}), "Metadata"),
        (_message(TrackLinks="Always"), "TrackLinks"),
        (_message(Bogus="x"), "Bogus"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_an_invalid_message_is_422_with_error_code_300_naming_the_field(live, message, named):
    response = _post(live, "/email", message, key=_key())

    assert named in _refused(response, 422, 300)
    assert Email.objects.count() == 0


def test_a_body_that_is_not_json_is_422_with_error_code_402(live):
    key = _key()
    for body in (b'{"From": "shop@example.com", "To": ', b"From=shop@example.com", b"\xff\xfe"):
        _refused(_post(live, "/email", body, key=key), 422, 402)
        _refused(_post(live, "/email/batch", body, key=key), 422, 402)
    assert Email.objects.count() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_content_type_that_is_not_json_is_422_with_error_code_409(live, content_type):
    body = json.dumps(_message())
    response = _post(live, "/email", body, key=_key(), **{"Content-Type": content_type})

    _refused(response, 422, 409)
    assert Email.objects.count() == 0


def test_a_batch_of_501_is_422_with_error_code_410_and_stores_nothing(live):
    key = _key()
    _refused(_post(live, "/email/batch", [_message()] * 501, key=key), 422, 410)
    assert Email.objects.count() == 0
    response = _post(live, "/email/batch", [_message()] * 500, key=key)  # the most there may be
    assert response.status_code == 200, response.text
    assert [answer["ErrorCode"] for answer in response.json()] == [0] * 500


def test_a_body_over_the_request_limit_is_413(live):
    huge = base64.b64encode(b"x" * (settings.MAIL_MAX_REQUEST_BYTES * 3 // 4 + 1024)).decode()
    body = json.dumps(_message(Attachments=[{"Name": "big.bin", "Content": huge}]))
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    response = _post(live, "/email", body, key=_key())

    assert response.status_code == 413, response.text
    assert response.json()["ErrorCode"] != 0
    assert Email.objects.count() == 0


def test_an_email_over_the_size_limit_is_413(live):
    content = base64.b64encode(b"x" * (settings.MAIL_MAX_EMAIL_BYTES + 1)).decode()
    body = json.dumps(_message(Attachments=[{"Name": "big.bin", "Content": content}]))
    assert len(body) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # the request is not too big, the email is

    response = _post(live, "/email", body, key=_key())

    assert response.status_code == 413, response.text
    assert response.json()["ErrorCode"] != 0
    assert Email.objects.count() == 0


def test_a_batch_answers_one_result_per_message_in_order_and_stores_the_valid_ones(live):
    key = _key()
    messages = [_message(Subject="First"), _message(Subject="two\nlines"), _message(Subject="Third"), "not a message"]

    response = _post(live, "/email/batch", messages, key=key)

    assert response.status_code == 200, response.text
    first, second, third, fourth = response.json()
    assert set(first) == set(third) == ANSWER_KEYS
    assert (first["ErrorCode"], third["ErrorCode"]) == (0, 0)
    assert set(second) == set(fourth) == {"ErrorCode", "Message"}
    assert (second["ErrorCode"], fourth["ErrorCode"]) == (300, 300)
    assert "Subject" in second["Message"]
    assert [_email(live, key, a["MessageID"])["subject"] for a in (first, third)] == ["First", "Third"]
    assert Email.objects.count() == 2


def test_a_batch_message_with_a_lone_surrogate_is_its_own_refusal_and_the_others_are_stored(live):
    # As found: the batch was stored, then its answer, quoting the address, could not be written: a 500 told the
    # client that nothing was taken, and a retry would have sent the first message twice.
    key = _key()

    response = _post(live, "/email/batch", [_message(), _message(Cc="bob\ud800@example.org")], key=key)

    assert response.status_code == 200, response.text
    accepted, refused = response.json()
    assert accepted["ErrorCode"] == 0 and _email(live, key, accepted["MessageID"])["subject"] == "Your order"
    assert refused["ErrorCode"] == 300 and "Cc" in refused["Message"]
    assert Email.objects.count() == 1


def test_a_key_limited_to_senders_sending_from_elsewhere_is_422_with_error_code_400(live):
    key = _key(senders=["example.com"])

    _refused(_post(live, "/email", _message(From="ops@elsewhere.org"), key=key), 422, 400)
    assert Email.objects.count() == 0
    [refused, accepted] = _post(live, "/email/batch", [_message(From="ops@elsewhere.org"), _message()], key=key).json()
    assert (refused["ErrorCode"], accepted["ErrorCode"]) == (400, 0)
    assert Email.objects.count() == 1


def test_tag_metadata_headers_stream_and_tracking_are_stored_and_shown(live):
    key = _key()
    message = _message(
        HtmlBody="<p>Thank you</p>",
        ReplyTo="Support <support@example.com>",
        Cc='"Doe, Jane" <jane@example.org>, carol@example.org',
        Bcc="dave@example.org",
        Tag="order-shipped",
        Metadata={"order": "1234", "color": "blue"},
        Headers=[{"Name": "X-Order", "Value": "42"}, {"Name": "In-Reply-To", "Value": "<a@example.com>"}],
        MessageStream="broadcast",
        TrackOpens=True,
        TrackLinks="HtmlAndText",
    )

    response = _post(live, "/email", message, key=key)

    assert response.status_code == 200, response.text
    shown = _email(live, key, response.json()["MessageID"])
    assert shown["tags"] == ["order-shipped"]
    assert shown["metadata"] == {"order": "1234", "color": "blue"}
    assert shown["headers"] == {"X-Order": "42", "In-Reply-To": "<a@example.com>"}
    assert shown["cc"] == ['"Doe, Jane" <jane@example.org>', "carol@example.org"]
    assert (shown["bcc"], shown["reply_to"]) == (["dave@example.org"], ["Support <support@example.com>"])
    assert (shown["text"], shown["html"]) == ("Thank you for your order.", "<p>Thank you</p>")
    assert shown["message_stream"] == "broadcast"
    assert (shown["track_opens"], shown["track_clicks"]) == (True, True)


def test_an_attachment_with_anymails_cid_content_id_is_an_inline_part(live):
    key = _key()
    attachments = [
        {"Name": "logo.png", "Content": base64.b64encode(PNG).decode(), "ContentType": "image/png",
         "ContentID": "cid:logo.png"},
        {"Name": "invoice.pdf", "Content": base64.b64encode(PDF).decode(), "ContentType": "application/pdf"},
    ]  # fmt: skip
    message = _message(HtmlBody='<p><img src="cid:logo.png"></p>', Attachments=attachments)

    response = _post(live, "/email", message, key=key)

    assert response.status_code == 200, response.text
    shown = _email(live, key, response.json()["MessageID"])
    assert shown["attachments"] == [
        {"filename": "logo.png", "content_type": "image/png", "content_id": "logo.png", "size": len(PNG)},
        {"filename": "invoice.pdf", "content_type": "application/pdf", "content_id": None, "size": len(PDF)},
    ]


def test_every_optional_field_given_as_null_is_as_if_absent(live):
    key = _key()
    nulls = dict.fromkeys(["Cc", "Bcc", "ReplyTo", "HtmlBody", "Headers", "Attachments", "Tag", "Metadata",
                           "MessageStream", "TrackOpens", "TrackLinks"])  # fmt: skip

    response = _post(live, "/email", _message(**nulls), key=key)

    assert response.status_code == 200, response.text
    shown = _email(live, key, response.json()["MessageID"])
    assert (shown["cc"], shown["tags"], shown["metadata"], shown["headers"], shown["attachments"]) == (
        [], [], {}, {}, []
    )  # fmt: skip
    assert (shown["track_opens"], shown["track_clicks"]) == (None, None)


# Inactive (suppressed) recipients, as anymail reads Postmark's words for them


def _suppress(key: str, address: str) -> None:
    Suppression.objects.create(api_key=ApiKey.objects.get(key_hash=ApiKey.hash(key)), address=address, reason="bounced")


def test_a_suppressed_recipient_is_rejected_in_anymails_status_and_the_others_sent(live, settings):
    key = _key()
    _suppress(key, "bob@example.org")
    message = EmailMultiAlternatives(
        "Hi", "Hello", "shop@example.com", ["alice@example.org", "bob@example.org"],
        connection=_anymail(live, key, settings),
    )  # fmt: skip

    message.send()

    statuses = message.anymail_status.recipients
    assert (statuses["alice@example.org"].status, statuses["bob@example.org"].status) == ("sent", "rejected")
    assert Email.objects.get().to == ["alice@example.org", "bob@example.org"]  # bob left out when it is sent


def test_every_recipient_suppressed_is_422_with_error_code_406_and_anymails_recipients_refused(live, settings):
    key = _key()
    _suppress(key, "bob@example.org")
    message = _message(To="Bob <BOB@example.org>")

    assert "Found inactive addresses: bob@example.org." in _refused(_post(live, "/email", message, key=key), 422, 406)
    mail = EmailMultiAlternatives("Hi", "Hello", "shop@example.com", ["bob@example.org"])
    mail.connection = _anymail(live, key, settings)
    with pytest.raises(AnymailRecipientsRefused):
        mail.send()
    assert Email.objects.count() == 0


def test_another_keys_suppression_leaves_the_recipient_active(live):
    _suppress(_key(), "bob@example.org")

    response = _post(live, "/email", _message(To="bob@example.org"), key=_key())

    assert (response.status_code, response.json()["Message"]) == (200, "OK")
