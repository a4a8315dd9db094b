"""A Postmark message read into an email's fields: Postmark's shapes (comma-separated addresses, Headers and
Attachments as lists, null as absent) taken as its clients send them, hostile ones refused in milliseconds, and
refusals written in the words Postmark's clients parse."""

import time

import pytest
from rest_framework.test import APIClient

from emails.errors import SENDER_NOT_ALLOWED, InvalidFields
from emails.postmark_message import MAX_ADDRESS_LIST_LENGTH, PostmarkRefusal, email_body, refusal_message
from emails.services import api_key_create, email_fields

MESSAGE = {"From": "Shop <shop@example.com>", "To": "ann@example.org", "Subject": "Hi", "TextBody": "Hello"}


def test_addresses_split_at_commas_outside_quotes_brackets_and_comments():
    body = email_body({**MESSAGE, "To": '"Doe, Jane" <jane@example.org>, bob@example.org (Bob, B.),<c@example.org>'})

    assert body["to"] == ['"Doe, Jane" <jane@example.org>', "bob@example.org (Bob, B.)", "<c@example.org>"]
    # An old-style comment is the display name, as Python's parser reads it.
    assert email_fields(body)["to"] == [
        '"Doe, Jane" <jane@example.org>',
        '"Bob, B." <bob@example.org>',
        "c@example.org",
    ]


def test_every_field_given_as_null_is_absent_as_postmarker_sends_them():
    unused = ["Cc", "Bcc", "ReplyTo", "HtmlBody", "Tag", "Metadata", "Headers", "Attachments", "MessageStream"]
    body = email_body({**MESSAGE, **dict.fromkeys(unused), "TrackOpens": None, "TrackLinks": None})

    assert body == {"from": MESSAGE["From"], "to": ["ann@example.org"], "subject": "Hi", "text": "Hello"}


def test_postmarks_fields_become_ours():
    body = email_body({
        **MESSAGE,
        "Cc": "cc@example.org", "Bcc": "", "ReplyTo": "help@example.com", "HtmlBody": "<p>Hello</p>",
        "Headers": [{"Name": "X-Order", "Value": "42"}], "Tag": "welcome", "Metadata": {"order": "42"},
        "MessageStream": "outbound", "TrackOpens": True, "TrackLinks": "HtmlOnly",
        "Attachments": [{"Name": "logo.png", "Content": "iVBORw0K", "ContentType": "image/png",
                         "ContentID": "cid:logo.png"}],
    })  # fmt: skip

    fields = email_fields(body)
    assert fields["cc"] == ["cc@example.org"] and fields.get("bcc", []) == []
    assert fields["reply_to"] == ["help@example.com"] and fields["html"] == "<p>Hello</p>"
    assert fields["headers"] == {"X-Order": "42"} and fields["tags"] == ["welcome"]
    assert fields["metadata"] == {"order": "42"} and fields["message_stream"] == "outbound"
    assert (fields["track_opens"], fields["track_clicks"]) == (True, True)
    [attachment] = fields["attachments"]
    assert attachment["content_id"] == "logo.png" and attachment["filename"] == "logo.png"


def test_track_links_none_turns_click_tracking_off():
    assert email_body({**MESSAGE, "TrackLinks": "None"})["track_clicks"] is False


@pytest.mark.parametrize(
    ("message", "named"),
    [
        ({**MESSAGE, "Colour": "red"}, "'Colour'"),
        ({**MESSAGE, "To": ["ann@example.org"]}, "'To'"),
        ({**MESSAGE, "Headers": {"X-Order": "42"}}, "'Headers'"),
        ({**MESSAGE, "Attachments": [{"Name": "a.txt", "Content": "aGk=", "Size": 2}]}, "'Attachments'"),
        ({**MESSAGE, "TrackLinks": "Always"}, "'TrackLinks'"),
        ({**MESSAGE, "TrackLinks": {}}, "'TrackLinks'"),
        ("not an object", "JSON object"),
    ],
    ids=["unknown field", "To as a list", "Headers as an object", "unknown attachment field", "TrackLinks",
         "TrackLinks as an object", "not an object"],
)  # fmt: skip
def test_a_shape_postmark_does_not_take_is_refused_naming_the_field(message, named):
    with pytest.raises(PostmarkRefusal) as refused:
        email_body(message)

    assert named in refused.value.message


def test_a_100_kb_address_list_is_refused_in_milliseconds_before_it_is_split():
    hostile = '"' + "\\," * 50_000  # quotes and escapes: the longest a splitter could take over it

    started = time.perf_counter()
    with pytest.raises(PostmarkRefusal) as refused:
        email_body({**MESSAGE, "To": hostile})

    assert time.perf_counter() - started < 0.1
    assert "at most 50 addresses" in refused.value.message


def test_an_address_list_at_the_bound_is_read_in_well_under_a_second():
    hostile = ("(" * 5 + '"\\' * 30 + ", ") * (MAX_ADDRESS_LIST_LENGTH // 72)

    started = time.perf_counter()
    body = email_body({**MESSAGE, "To": hostile[:MAX_ADDRESS_LIST_LENGTH]})
    with pytest.raises(InvalidFields):
        email_fields(body)

    assert time.perf_counter() - started < 0.5


def _refused(message: dict) -> str:
    body = email_body(message)
    with pytest.raises(InvalidFields) as refused:
        email_fields(body)
    return refusal_message(refused.value, body)


def test_a_bad_recipient_is_named_as_anymail_reads_a_refused_recipient():
    assert _refused({**MESSAGE, "To": "ann@example.org, Bad <bad@@example.org>"}) == (
        "Invalid 'To' address: 'bad@@example.org'."
    )
    assert _refused({**MESSAGE, "Cc": "nobody"}) == "Invalid 'Cc' address: 'nobody'."


def test_other_refusals_name_the_postmark_field():
    assert _refused({**MESSAGE, "From": "shop"}).startswith("Invalid 'From' address: 'shop'.")
    assert _refused({**MESSAGE, "Subject": "Two\nlines"}).startswith("Invalid 'Subject': ")
    assert _refused({**MESSAGE, "Headers": [{"Name": "Received", "Value": "x"}]}).startswith("Invalid 'Headers': ")


def test_a_sender_the_key_may_not_use_names_from():
    refused = InvalidFields({"from": ["This API key may not send from 'x@evil.example'."]}, code=SENDER_NOT_ALLOWED)

    assert refusal_message(refused, email_body(MESSAGE)) == (
        "Invalid 'From': This API key may not send from 'x@evil.example'."
    )


@pytest.mark.django_db
def test_a_key_over_its_rate_at_the_postmark_door_gets_429_with_error_code_429_and_retry_after(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "2/day"}}
    _, key = api_key_create(name="postmark-rate")
    client = APIClient(HTTP_X_POSTMARK_SERVER_TOKEN=key)

    answers = [client.post("/email", MESSAGE, format="json") for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[2].json()["ErrorCode"] == 429 and int(answers[2]["Retry-After"]) > 0
