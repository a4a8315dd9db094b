"""emails/drf_speedups.py steps past DRF's public API for speed. These tests fail if DRF changes under it: the
private names it overrides must still exist with the shape it relies on, and our serializers must give exactly
what a stock DRF serializer with the same declared fields gives, for valid bodies, invalid ones and stored rows."""

from __future__ import annotations

import base64
import copy
import datetime
import inspect
import threading
from functools import cached_property

import pytest
from django.conf import settings
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.fields import SkipField, empty

from emails.apis import EmailDetailApi, EmailListApi
from emails.drf_speedups import FieldsOnce, GivenFieldsOnly, reusable, validated
from emails.fields import RefusesUnknownFields, api_names
from emails.models import EmailEvent
from emails.selectors import email_get
from emails.services import api_key_create, email_create, email_create_batch, email_fields, email_resend
from emails.services.validating import EmailFields

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(256))).decode()
PDF = base64.b64encode(b"%PDF-1.4\n" + b"x" * 300).decode()


def _twin(serializer_class: type[serializers.Serializer], *mixins: type) -> type[serializers.Serializer]:
    """A serializer with deep copies of `serializer_class`'s declared fields, its validate() and its `from`
    renaming, on stock DRF (plus `mixins`): what the class would be without drf_speedups."""
    attrs = copy.deepcopy(serializer_class._declared_fields)

    def get_fields(self):
        return api_names(serializers.Serializer.get_fields(self), from_email="from")

    attrs["get_fields"] = get_fields
    if "validate" in vars(serializer_class):
        attrs["validate"] = vars(serializer_class)["validate"]
    twin = serializers.SerializerMetaclass(
        f"Stock{serializer_class.__name__}", (*mixins, serializers.Serializer), attrs
    )
    # A rename added to the class but not here would make every comparison below meaningless.
    assert list(twin().fields) == list(reusable(serializer_class).fields)
    return twin


STOCK_EMAIL_FIELDS = _twin(EmailFields)
# The refusal of unknown fields is ours, not DRF's: GivenFieldsOnly refuses them as RefusesUnknownFields does.
REFUSING_EMAIL_FIELDS = _twin(EmailFields, RefusesUnknownFields)


def _ours(body):
    """('valid', data) or ('invalid', errors) from the sped-up path every door uses."""
    try:
        return "valid", validated(EmailFields, body)
    except ValidationError as exc:
        return "invalid", exc.detail


def _stock(serializer_class, body):
    serializer = serializer_class(data=body)
    if serializer.is_valid():
        return "valid", dict(serializer.validated_data)
    return "invalid", dict(serializer.errors)


def _same(ours, stock) -> None:
    assert ours == stock  # ErrorDetail compares its code too
    if ours[0] == "invalid":
        assert list(ours[1]) == list(stock[1])  # errors named in the same order


def _body(**overrides):
    body = {"from": "Shop <shop@example.com>", "to": ["alice@example.org"], "subject": "Your order", "text": "Hi"}
    body.update(overrides)
    return {name: value for name, value in body.items() if value is not _ABSENT}


_ABSENT = object()
LIMIT = settings.MAIL_MAX_RECIPIENTS

FULL = _body(
    to=["Alice <alice@example.org>", "bob@example.org"],
    cc=["Zoë Zeta <zoe@example.org>"],
    bcc="dave@bücher.de",
    reply_to=["support@example.com"],
    subject="Ihre Bestellung über 3 Artikel",
    text="Grüße!\n",
    html='<p>Grüße! <img src="cid:logo.png"></p>',
    headers={"X-Order": "42", "Sender": "Ops <ops@example.com>", "In-Reply-To": "<a@example.com>"},
    attachments=[
        {"filename": "logo.png", "content": PNG, "content_type": "image/png", "content_id": "logo.png"},
        {"filename": "invoice.pdf", "content": PDF},
    ],
    tags=["order", "shipped"],
    metadata={"order": "1234", "empty": ""},
    send_at="2030-01-31T09:00:00+01:00",
    message_stream="outbound",
    track_opens=True,
    track_clicks=False,
)

VALID = {
    "every field": FULL,
    "minimal": _body(),
    "to as one string": _body(to="alice@example.org"),
    "html only": _body(text=_ABSENT, html="<p>Hi</p>"),
    "blank text beside html": _body(text="", html="<p>Hi</p>"),
    "template with context": _body(subject=_ABSENT, text=_ABSENT, template="welcome", context={"name": "Ann"}),
    "send_at null": _body(send_at=None),
    "tracking null": _body(track_opens=None, track_clicks=None),
    "the most recipients": _body(to=[f"t{n}@example.org" for n in range(LIMIT - 1)], cc=["c@example.org"]),
    "empty lists and maps": _body(cc=[], bcc=[], reply_to=[], headers={}, attachments=[], tags=[], metadata={}),
}

INVALID = {
    "null": None,
    "an array": [FULL],
    "a string": "from: shop@example.com",
    "a number": 42,
    "empty object": {},
    "from missing": _body(**{"from": _ABSENT}),
    "from a number": _body(**{"from": 42}),
    "from null": _body(**{"from": None}),
    "from not an address": _body(**{"from": "shop"}),
    "from two addresses": _body(**{"from": "a@example.com, b@example.com"}),
    "from too long": _body(**{"from": "a" * 400 + "@example.com"}),
    "from with a line break": _body(**{"from": "Shop\n <shop@example.com>"}),
    "from deeply nested comments": _body(**{"from": "(" * 20 + "shop@example.com" + ")" * 20}),
    "to missing": _body(to=_ABSENT),
    "to empty": _body(to=[]),
    "to null": _body(to=None),
    "to an object": _body(to={"a": "alice@example.org"}),
    "to holding a number": _body(to=[42]),
    "to with one bad of three": _body(to=["a@example.org", "bad@@example.org", "c@example.org"]),
    "to over 50": _body(to=[f"t{n}@example.org" for n in range(51)]),
    "one recipient too many in all": _body(to=[f"t{n}@example.org" for n in range(LIMIT)], cc=["c@example.org"]),
    "cc not a list": _body(cc=42),
    "bcc non-ASCII local part": _body(bcc=["zoë@example.org"]),
    "reply_to over 50": _body(reply_to=[f"r{n}@example.org" for n in range(51)]),
    "subject missing": _body(subject=_ABSENT),
    "subject empty": _body(subject=""),
    "subject two lines": _body(subject="two\nlines"),
    "subject too long": _body(subject="s" * 999),
    "subject a number": _body(subject=42),
    "subject a list": _body(subject=["Hi"]),
    "no text nor html": _body(text=_ABSENT),
    "text and html blank": _body(text="", html=""),
    "text with NUL": _body(text="a\x00b"),
    "html a lone surrogate": _body(html="\ud800"),
    "text true": _body(text=True),
    "headers a list": _body(headers=[{"Name": "X-A", "Value": "1"}]),
    "headers reserved": _body(headers={"From": "x@example.org"}),
    "headers trusted": _body(headers={"Received": "from x", "ARC-Seal": "i=1"}),
    "headers bad name": _body(headers={"Bad Name": "1"}),
    "headers value two lines": _body(headers={"X-A": "1\r\nBcc: x@example.org"}),
    "headers value a number": _body(headers={"X-A": 1}),
    "headers over 50": _body(headers={f"X-H{n}": "v" for n in range(51)}),
    "headers bad Sender": _body(headers={"Sender": "not an address"}),
    "attachments an object": _body(attachments={"filename": "a.txt", "content": PDF}),
    "attachments over 20": _body(attachments=[{"filename": f"{n}.txt", "content": PDF} for n in range(21)]),
    "attachment not an object": _body(attachments=["a.txt"]),
    "attachment fields missing": _body(attachments=[{}]),
    "attachment not base64": _body(attachments=[{"filename": "a.txt", "content": "not base64!"}]),
    "attachment with a path": _body(attachments=[{"filename": "../a.txt", "content": PDF}]),
    "attachment bad type": _body(attachments=[{"filename": "a", "content": PDF, "content_type": "pdf"}]),
    "attachment bad content_id": _body(attachments=[{"filename": "a", "content": PDF, "content_id": "<a b>"}]),
    "attachment unknown field": _body(attachments=[{"filename": "a", "content": PDF, "disposition": "inline"}]),
    "attachments nested errors": _body(
        attachments=[{"filename": "ok.pdf", "content": PDF}, {"filenam": "a", "content": "!"}, {"filename": 1}]
    ),
    "content_id twice": _body(
        attachments=[{"filename": n, "content": PNG, "content_id": "logo"} for n in ("a.png", "b.png")]
    ),
    "template not a slug": _body(template="no spaces allowed"),
    "context without template": _body(context={"name": "Ann"}),
    "context a list": _body(template="welcome", context=["Ann"]),
    "tags a string": _body(tags="order"),
    "tags over 20": _body(tags=[f"t{n}" for n in range(21)]),
    "tag too long": _body(tags=["t" * 101]),
    "tag two lines": _body(tags=["a\nb"]),
    "metadata a list": _body(metadata=["a"]),
    "metadata empty key": _body(metadata={"": "x"}),
    "metadata value a number": _body(metadata={"order": 1234}),
    "metadata over 50 keys": _body(metadata={f"k{n}": "v" for n in range(51)}),
    "send_at without a zone": _body(send_at="2030-01-31T09:00:00"),
    "send_at garbage": _body(send_at="tomorrow"),
    "send_at too long": _body(send_at="2030-01-31T09:00:00" + "0" * 60 + "Z"),
    "send_at a number": _body(send_at=1893456000),
    "message_stream two lines": _body(message_stream="a\nb"),
    "message_stream too long": _body(message_stream="s" * 101),
    "track_opens a string": _body(track_opens="yes"),
    "track_clicks a number": _body(track_clicks=1),
    "many bad fields at once": _body(
        **{"from": "shop", "to": [], "subject": "a\nb", "headers": {"To": "x"}, "tags": "x", "send_at": "x"}
    ),
}


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_a_valid_body_validates_to_what_stock_drf_gives(body):
    ours = _ours(body)
    assert ours[0] == "valid", ours
    _same(ours, _stock(STOCK_EMAIL_FIELDS, body))


@pytest.mark.parametrize("body", INVALID.values(), ids=INVALID.keys())
def test_an_invalid_body_is_refused_with_the_errors_stock_drf_gives(body):
    ours = _ours(body)
    assert ours[0] == "invalid", ours
    _same(ours, _stock(STOCK_EMAIL_FIELDS, body))


UNKNOWN = {
    "one unknown field": _body(bogus=1),
    "unknown beside every valid field": {**FULL, "Subject": "x", "track_opens": True},
    "unknown and a body error": _body(subject=_ABSENT, dry_run=True),  # validate()'s error: not reached by either
    "more unknown than are named": _body(**{f"extra{n:02}": n for n in range(25)}),
    "an unknown name with a NUL": _body(**{"a\x00b": 1}),
    "an unknown name too long to echo": _body(**{"x" * 500: 1}),
}


@pytest.mark.parametrize("body", UNKNOWN.values(), ids=UNKNOWN.keys())
def test_an_unknown_field_is_refused_as_refuses_unknown_fields_refuses_it(body):
    ours = _ours(body)
    assert ours[0] == "invalid", ours
    _same(ours, _stock(REFUSING_EMAIL_FIELDS, body))


UNKNOWN_BESIDE_BAD = {
    "unknown beside a bad address": _body(to=["bad@@example.org"], bogus=1),
    "Postmark's names for ours": {"From": "shop@example.com", "To": "alice@example.org", "Subject": "Hi"},
}


@pytest.mark.parametrize("body", UNKNOWN_BESIDE_BAD.values(), ids=UNKNOWN_BESIDE_BAD.keys())
def test_an_unknown_field_beside_a_bad_field_names_both_as_refuses_unknown_fields_does(body):
    _same(_ours(body), _stock(REFUSING_EMAIL_FIELDS, body))


# The names drf_speedups overrides or relies on, with the shape it relies on.


class _Probe(serializers.Serializer):
    plain = serializers.CharField()
    hidden = serializers.CharField(write_only=True)
    shown = serializers.CharField(read_only=True)
    dotted = serializers.CharField(source="a.b", required=False)
    everything = serializers.DictField(source="*", read_only=True)


def test_drf_serializer_still_has_readable_and_writable_fields_as_properties_filtering_by_read_and_write_only():
    for name in ("_readable_fields", "_writable_fields"):
        assert isinstance(inspect.getattr_static(serializers.Serializer, name), property | cached_property), name
        assert isinstance(inspect.getattr_static(FieldsOnce, name), cached_property), name
    probe = _Probe()
    assert [f.field_name for f in probe._readable_fields] == ["plain", "shown", "dotted", "everything"]
    assert [f.field_name for f in probe._writable_fields] == ["plain", "hidden", "dotted"]


def test_drf_still_reads_and_writes_fields_through_those_properties():
    class OnlyPlain(_Probe):
        @property
        def _readable_fields(self):
            return [self.fields["plain"]]

        @property
        def _writable_fields(self):
            return [self.fields["plain"]]

    assert OnlyPlain().to_representation({"plain": "p", "shown": "s", "a": {"b": "d"}}) == {"plain": "p"}
    assert OnlyPlain().to_internal_value({"plain": "p", "hidden": "h", "dotted": "d"}) == {"plain": "p"}


def test_drf_serializer_validation_still_runs_to_internal_value_then_run_validators_then_validate():
    for cls, name, parameters in [
        (serializers.Serializer, "to_internal_value", ["self", "data"]),
        (serializers.Serializer, "run_validators", ["self", "value"]),
        (serializers.Serializer, "run_validation", ["self", "data"]),
        (serializers.Serializer, "to_representation", ["self", "instance"]),
        (serializers.Field, "run_validators", ["self", "value"]),
        (serializers.Field, "get_attribute", ["self", "instance"]),
        (serializers.Field, "get_value", ["self", "dictionary"]),
    ]:
        assert list(inspect.signature(vars(cls)[name]).parameters) == parameters, (cls, name)
    calls = []

    class Recording(serializers.Serializer):
        plain = serializers.CharField()

        def to_internal_value(self, data):
            calls.append("to_internal_value")
            return super().to_internal_value(data)

        def run_validators(self, value):
            calls.append(("run_validators", dict(value)))
            super().run_validators(value)

        def validate(self, attrs):
            calls.append("validate")
            return attrs

    assert Recording().run_validation({"plain": "p"}) == {"plain": "p"}
    assert calls == ["to_internal_value", ("run_validators", {"plain": "p"}), "validate"]


def test_what_givenfieldsonly_skips_is_what_drf_would_skip_for_email_fields():
    """GivenFieldsOnly leaves out DRF's SkipField for absent optional fields, validate_<name> methods, nested
    sources and read-only defaults: true to DRF only while EmailFields has none of those, and DRF skips so."""
    serializer = reusable(EmailFields)
    for field in serializer.fields.values():
        assert field.default is empty, field.field_name
        assert not field.read_only, field.field_name
        assert field.source_attrs == [field.source], field.field_name  # validated[field.source] is set_value's
        assert not hasattr(serializer, f"validate_{field.field_name}"), field.field_name
        if not field.required:
            with pytest.raises(SkipField):  # what DRF's loop catches, for each absent optional field
                field.run_validation(field.get_value({}))
    assert serializer.validators == []
    assert callable(serializers.Serializer._read_only_defaults)  # what run_validators gathers first
    assert isinstance(inspect.getattr_static(RefusesUnknownFields, "_field_names"), cached_property)
    assert GivenFieldsOnly.__mro__.index(FieldsOnce) < GivenFieldsOnly.__mro__.index(RefusesUnknownFields)


def test_drf_field_still_keeps_its_source_as_source_attrs_and_reads_it_with_get_attribute():
    probe = _Probe()
    fields = probe.fields
    assert fields["plain"].source_attrs == ["plain"]
    assert fields["dotted"].source_attrs == ["a", "b"]
    assert fields["everything"].source_attrs == []
    assert fields["dotted"].get_attribute({"a": {"b": "d"}}) == "d"

    class Holder:
        def plain(self):  # a method: stock DRF calls it, FieldsOnce would not (it never meets one)
            return "called"

    assert fields["plain"].get_attribute(Holder()) == "called"


# to_representation: FieldsOnce against stock DRF, on Emails and on stored rows.


@pytest.fixture
def emails(db) -> list:
    """Emails in each state a client sees: just accepted, with events and sent, scheduled, resent."""
    api_key, _ = api_key_create(name="speedups")
    plain = email_create(api_key=api_key, **email_fields(_body()))
    full = email_create(api_key=api_key, **email_fields({**FULL, "send_at": None}))
    EmailEvent.objects.create(email=full, type="retry", provider="sink", detail="451 try later")
    EmailEvent.objects.create(email=full, type="sent", provider="sink", detail="<id@example.com>")
    scheduled = email_create(api_key=api_key, **email_fields({**FULL, "send_at": "2030-01-31T09:00:00Z"}))
    resent = email_resend(email=email_get(api_key=api_key, email_id=full.id))
    fetched = [email_get(api_key=api_key, email_id=e.id) for e in (plain, full, scheduled, resent)]
    fetched[1].sent_at = datetime.datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)
    fetched[1].provider, fetched[1].provider_message_id, fetched[1].status = "sink", "<id@example.com>", "SENT"
    return [plain, *fetched]  # `plain` as email_create returns it: events known empty, no query


@pytest.mark.parametrize("serializer_class", [EmailDetailApi.OutputSerializer, EmailListApi.OutputSerializer])
def test_an_email_is_shown_as_stock_drf_shows_it(emails, serializer_class):
    stock = _twin(serializer_class)()
    shown = [reusable(serializer_class).to_representation(email) for email in emails]
    for ours, email in zip(shown, emails, strict=True):
        assert ours == stock.to_representation(email)
        assert list(ours) == list(stock.to_representation(email))
    if "events" in stock.fields:
        assert any(each["events"] for each in shown)  # events compared, not only empty lists


def test_a_batchs_stored_row_is_summarised_as_stock_drf_summarises_it(db):
    api_key, _ = api_key_create(name="speedups")
    items = [email_fields(_body()), email_fields({**FULL, "send_at": "2030-01-31T09:00:00Z"})]
    rows = [outcome["email"] for outcome in email_create_batch(api_key=api_key, items=items)]
    stock = _twin(EmailListApi.OutputSerializer)()
    for row in rows:
        assert isinstance(row, dict)
        assert reusable(EmailListApi.OutputSerializer).to_representation(row) == stock.to_representation(row)


def test_shown_values_are_never_callables_which_fieldsonce_reads_without_calling(emails):
    for serializer_class in (EmailDetailApi.OutputSerializer, EmailListApi.OutputSerializer):
        for name, source, _ in reusable(serializer_class)._read_plan:
            if source is not None:
                for email in emails:
                    assert not callable(getattr(email, source)), (serializer_class, name)


# reusable(): one instance, no state carried from one use to the next.


def test_reusable_gives_the_same_instance_each_time():
    assert reusable(EmailFields) is reusable(EmailFields)
    assert reusable(EmailDetailApi.OutputSerializer) is reusable(EmailDetailApi.OutputSerializer)
    assert reusable(EmailFields) is not reusable(EmailListApi.OutputSerializer)


def test_one_validation_leaves_nothing_in_the_next():
    serializer = reusable(EmailFields)
    before = set(vars(serializer))
    full = _ours(FULL)
    refused = _ours(INVALID["many bad fields at once"])
    minimal = _ours(_body())

    assert minimal == ("valid", validated(EmailFields, _body()))
    assert set(minimal[1]) == {"from_email", "to", "subject", "text"}  # nothing of the full body before it
    assert _ours(FULL) == full
    assert _ours(INVALID["many bad fields at once"]) == refused
    assert not {"initial_data", "_errors", "_validated_data", "_data"} & set(vars(serializer))
    assert set(vars(serializer)) - before <= {"_readable_fields", "_writable_fields", "_field_names", "_read_plan"}


def test_validations_in_concurrent_threads_each_get_their_own_result():
    """gunicorn's gthread workers validate on one reusable instance from several threads at once."""
    bodies = [_body(to=[f"t{n}@example.org"], subject=f"Order {n}") for n in range(6)] + [
        INVALID["many bad fields at once"],
        INVALID["attachments nested errors"],
    ]
    expected = [_stock(STOCK_EMAIL_FIELDS, body) for body in bodies]
    mismatches = []
    start = threading.Barrier(len(bodies))

    def run(index: int) -> None:
        start.wait()
        for _ in range(300):
            got = _ours(bodies[index])
            if got != expected[index]:
                mismatches.append((index, got))
                return

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert mismatches == []
