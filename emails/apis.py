import datetime
import functools
import hashlib
import json
from functools import cached_property

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.fields import SkipField, get_error_detail
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from emails import schema, selectors
from emails.errors import InvalidFields
from emails.fields import (
    MAX_ADDRESS_LENGTH,
    AddressField,
    AddressListField,
    AnyCaseChoiceField,
    AttachmentSerializer,
    BoundedDateTimeField,
    BoundedListField,
    HeadersField,
    MetadataField,
    ParsedJson,
    RefusesUnknownFields,
    StrictCharField,
    TemplateNameField,
    UtcDateTimeField,
    attachment_size,
    unknown_field_errors,
)
from emails.services import email_create, email_create_batch, email_resend, idempotent

MAX_TAG_LENGTH = 100
# A list cursor as the server writes it (selectors.encode_cursor): URL-safe base64 of the last row's time and id.
CURSOR = r"^[A-Za-z0-9_-]+={0,2}$"
MAX_CURSOR_LENGTH = 128


def _api_name(fields: dict, python_name: str, api_name: str) -> dict:
    """`from` is a Python keyword: declare the field as from_email and expose it as `from`."""
    return {(api_name if name == python_name else name): field for name, field in fields.items()}


@functools.cache
def _reusable(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    """One instance per serializer class, used only through run_validation() and to_representation(),
    which keep no state on it: building an instance deep-copies every declared field (~1 ms for ours)."""
    return serializer_class()


class FieldsOnce:
    """For a serializer used through _reusable(): its lists of fields made once, where DRF walks its field
    mapping again for every body or row (500 times for a batch)."""

    @cached_property
    def _readable_fields(self) -> list:
        return [field for field in self.fields.values() if not field.write_only]

    @cached_property
    def _writable_fields(self) -> list:
        return [field for field in self.fields.values() if not field.read_only]

    @cached_property
    def _read_plan(self) -> list[tuple[str, str | None, serializers.Field]]:
        """Each readable field's name, the attribute (or key) it reads when its source is one plain name
        (None for dotted sources and fields that read for themselves), and the field."""
        plan = []
        for field in self._readable_fields:
            plain = len(field.source_attrs) == 1 and type(field).get_attribute is serializers.Field.get_attribute
            plan.append((field.field_name, field.source_attrs[0] if plain else None, field))
        return plan

    def to_representation(self, instance) -> dict:
        """DRF's Serializer.to_representation, reading a plain source directly: DRF's get_attribute also
        tests every value for being a callable to call (inspect's checks, ~25 per email). Our instances
        are Emails and stored rows (dicts), whose values are never callables."""
        is_row = isinstance(instance, dict)
        representation = {}
        for name, source, field in self._read_plan:
            if source is None:
                try:
                    value = field.get_attribute(instance)
                except SkipField:
                    continue
            else:
                value = instance[source] if is_row else getattr(instance, source)
            representation[name] = None if value is None else field.to_representation(value)
        return representation


def _validated(serializer_class: type[serializers.Serializer], data) -> dict:
    """serializer_class(data=data).is_valid(raise_exception=True).validated_data, without building one."""
    try:
        return _reusable(serializer_class).run_validation(data)
    except ValidationError as exc:
        if isinstance(exc.detail, dict):
            raise
        # A body of `null`: an object naming the problem, as is_valid() and every other error answer.
        detail = ["No data provided."] if data is None else exc.detail
        raise ValidationError({api_settings.NON_FIELD_ERRORS_KEY: detail}) from None


def _idempotently(request, produce) -> Response:
    """Answers with `produce()`'s (status, body), once per Idempotency-Key (when the client sends one); a
    repeat's answer says it is one, with `Idempotent-Replayed: true` (as Stripe's API does)."""
    key = request.headers.get("Idempotency-Key")
    replayed = False
    if key is None:
        status_code, body = produce()
    else:
        if not key or len(key) > schema.MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ValidationError(
                {"Idempotency-Key": [f"Between 1 and {schema.MAX_IDEMPOTENCY_KEY_LENGTH} characters."]}
            )
        canonical = json.dumps([request.path, request.data], sort_keys=True, separators=(",", ":"))
        request_hash = hashlib.sha256(canonical.encode()).hexdigest()
        status_code, body, replayed = idempotent(
            api_key=request.auth, key=key, request_hash=request_hash, produce=produce
        )
    headers = {"Location": f"/api/v1/emails/{body['id']}"} if isinstance(body, dict) and "id" in body else {}
    if replayed:
        headers[schema.REPLAYED_HEADER] = "true"
    return Response(body, status=status_code, headers=headers)


class EmailDetailApi(APIView):
    @extend_schema_serializer(component_name="Email")
    class OutputSerializer(FieldsOnce, serializers.Serializer):
        """An email: what was submitted (as rendered from its template), where it stands, and what happened
        to it."""

        @extend_schema_serializer(component_name="EmailEvent")
        class EventSerializer(serializers.Serializer):
            """One step of an email's history."""

            type = serializers.CharField(help_text=schema.EVENT_TYPES)
            at = UtcDateTimeField(help_text="When, in UTC.")
            provider = serializers.CharField(help_text="The provider it happened at; empty for the service's own.")
            detail = serializers.CharField(
                help_text="The provider's message id (sent), its error (retry, failed), the recipients left out "
                "(suppressed), or what the provider reported."
            )

        @extend_schema_serializer(component_name="AttachmentInfo")
        class AttachmentInfoSerializer(serializers.Serializer):
            """An attachment, without its content."""

            filename = serializers.CharField()
            content_type = serializers.CharField()
            content_id = serializers.CharField(
                allow_null=True, help_text="An inline part's id (the html shows it as `cid:<content_id>`); null: "
                "attached."
            )  # fmt: skip
            size = serializers.SerializerMethodField(help_text="In bytes, decoded.")

            def get_size(self, attachment) -> int:
                return attachment_size(attachment)

        id = serializers.UUIDField()
        status = serializers.CharField(help_text=schema.STATUSES)
        from_email = serializers.CharField(source="from_email")
        to = serializers.ListField(child=serializers.CharField())
        cc = serializers.ListField(child=serializers.CharField())
        bcc = serializers.ListField(child=serializers.CharField())
        reply_to = serializers.ListField(child=serializers.CharField())
        subject = serializers.CharField()
        text = serializers.CharField()
        html = serializers.CharField()
        headers = serializers.DictField(child=serializers.CharField())
        attachments = AttachmentInfoSerializer(many=True)
        template = serializers.CharField(help_text="The template it was rendered from; empty: none.")
        tags = serializers.ListField(child=serializers.CharField())
        metadata = serializers.DictField(child=serializers.CharField())
        attempts = serializers.IntegerField(help_text=schema.ATTEMPTS)
        provider = serializers.CharField(help_text=schema.PROVIDER)
        provider_message_id = serializers.CharField(help_text=schema.PROVIDER_MESSAGE_ID)
        last_error = serializers.CharField(help_text=schema.LAST_ERROR)
        created_at = UtcDateTimeField(help_text="When it was accepted, in UTC.")
        send_at = UtcDateTimeField(allow_null=True, help_text="Not sent before this time; null: at once.")
        sent_at = UtcDateTimeField(allow_null=True, help_text="When a provider accepted it; null until then.")
        resent_from = serializers.UUIDField(
            source="resent_from_id", allow_null=True, help_text="The email this one resends; null: none."
        )
        events = EventSerializer(many=True, source="events.all", help_text="Its history, oldest first.")

        def get_fields(self):
            return _api_name(super().get_fields(), "from_email", "from")

    @extend_schema(
        operation_id="email_get",
        summary="An email, with its events",
        description=schema.EMAIL_GET,
        parameters=[schema.EMAIL_ID],
        responses={
            200: OpenApiResponse(OutputSerializer, description="The email."),
            **schema.errors(401, 404, 429, 503),
        },
    )
    def get(self, request, email_id):
        email = selectors.email_get(api_key=request.auth, email_id=email_id)
        if email is None:
            raise NotFound("No such email.")
        return Response(_reusable(self.OutputSerializer).to_representation(email))


class EmailCreateApi(APIView):
    @extend_schema_serializer(component_name="EmailCreate")
    class InputSerializer(FieldsOnce, RefusesUnknownFields, serializers.Serializer):
        """An email to send: `from`, `to`, and `subject` with `text` and/or `html`, or a `template` that gives
        them. Any other field is a 400 naming it."""

        from_email = AddressField(
            source="from_email",
            help_text="`addr` or `Name <addr>`, at most 400 characters; one of the API key's senders when it has "
            "a list. Also the envelope sender.",
        )
        to = AddressListField(
            min_length=1,
            help_text="A list of addresses (or one, as a string); `to`, `cc` and `bcc` hold at most 50 together.",
        )
        cc = AddressListField(required=False, help_text="Addresses, as `to`.")
        bcc = AddressListField(required=False, help_text="Addresses, as `to`; not shown to the other recipients.")
        reply_to = AddressListField(required=False, help_text="At most 50 addresses.")
        subject = StrictCharField(
            single_line=True,
            max_length=998,
            required=False,
            help_text="One line, at most 998 characters. Required unless the template gives it.",
        )
        text = StrictCharField(
            required=False,
            allow_blank=True,
            trim_whitespace=False,
            help_text="The plain-text body. Give text, html or both, unless the template gives them.",
        )
        html = StrictCharField(
            required=False,
            allow_blank=True,
            trim_whitespace=False,
            help_text="The html body; it shows an inline attachment as `cid:<content_id>`.",
        )
        headers = HeadersField(
            required=False,
            help_text='Extra headers, at most 50: `{"name": "value"}`, a name of at most 100 characters, a value '
            "of at most 998 on one line. Not those with a field of their own (From, To, Cc, Bcc, Reply-To, Subject, "
            "Content-Type, ...), nor those only a relay, a signer, this service or a provider sets (Received, "
            "Received-SPF, Return-Path, DKIM-Signature, DomainKey-Signature, ARC-*, Authentication-Results, "
            "X-Mailservice-Id, X-SMTPAPI, X-MSYS-API, X-Mailgun-*, X-PM-*, X-SES-*, X-MC-*, X-MJ-*, X-Mailin-*). "
            "Message-ID, In-Reply-To, References, Date and Sender are yours to set.",
        )
        attachments = BoundedListField(
            child=AttachmentSerializer(),
            required=False,
            max_length=20,
            help_text="At most 20 files; their decoded size counts towards the email's 10 MB.",
        )
        template = TemplateNameField(
            required=False,
            help_text="A stored template's name (a slug: letters, digits, `-` and `_`), rendered with `context`. "
            "Fields given in the request win over the template's.",
        )
        context = serializers.DictField(
            required=False,
            help_text="The template's variables (only with `template`); escaped in html, not in subject and text.",
        )
        tags = BoundedListField(
            child=StrictCharField(single_line=True, max_length=MAX_TAG_LENGTH), required=False, max_length=20,
            help_text="At most 20, each one line of at most 100 characters; the list filters on one with `?tag=`.",
        )  # fmt: skip
        metadata = MetadataField(
            required=False,
            help_text="At most 50 keys (1 to 100 characters, one line) with string values of at most 1000 "
            "characters, returned as given.",
        )
        send_at = BoundedDateTimeField(
            required=False,
            allow_null=True,
            help_text="ISO 8601 with a time zone or offset (`2030-01-31T09:00:00Z`); the email stays PENDING "
            "until then. Null or absent: at once.",
        )

        def get_fields(self):
            return _api_name(super().get_fields(), "from_email", "from")

        @cached_property
        def _field_names(self) -> frozenset:
            return frozenset(self.fields)

        def to_internal_value(self, data):
            if not isinstance(data, dict):
                return super().to_internal_value(data)  # DRF's error for a body that is not an object
            if not self._field_names.issuperset(data):
                raise serializers.ValidationError(unknown_field_errors(data, self._field_names))
            # DRF's loop, over the fields the body gives and the required ones only: for each absent
            # optional field (a dozen in a typical email) DRF raises and catches SkipField, a third of the
            # time it takes to validate a body. None of these fields has a default or a validate_<name>.
            validated, errors = {}, {}
            for field in self._writable_fields:
                if field.field_name not in data and not field.required:
                    continue
                try:
                    validated[field.source] = field.run_validation(field.get_value(data))
                except serializers.ValidationError as exc:
                    errors[field.field_name] = exc.detail
                except DjangoValidationError as exc:
                    errors[field.field_name] = get_error_detail(exc)
            if errors:
                raise serializers.ValidationError(errors)
            return validated

        def run_validators(self, value):
            # DRF first gathers the defaults of read-only fields (there are none), for each body.
            if self.validators:
                super().run_validators(value)

        def validate(self, attrs):
            if "context" in attrs and not attrs.get("template"):
                raise serializers.ValidationError({"context": ["Only with a template: give `template` too."]})
            if not attrs.get("template"):  # else the template gives them (checked once rendered)
                if not attrs.get("subject"):
                    raise serializers.ValidationError({"subject": ["This field is required (or give a template)."]})
                if not attrs.get("text") and not attrs.get("html"):
                    message = "Give text, html, or both (or a template)."
                    raise serializers.ValidationError({"text": [message], "html": [message]})
            count = sum(len(attrs.get(f, [])) for f in ("to", "cc", "bcc"))
            if count > settings.MAIL_MAX_RECIPIENTS:
                raise serializers.ValidationError(
                    {"to": [f"At most {settings.MAIL_MAX_RECIPIENTS} recipients in to, cc and bcc together ({count})."]}
                )
            if "attachments" in attrs:
                content_ids = [a["content_id"] for a in attrs["attachments"] if "content_id" in a]
                if len(set(content_ids)) < len(content_ids):
                    twice = sorted({i for i in content_ids if content_ids.count(i) > 1})
                    message = f"Each content_id once per email: {', '.join(map(repr, twice))} is given more than once."
                    raise serializers.ValidationError({"attachments": [message]})
            return attrs

    @extend_schema(
        operation_id="email_create",
        summary="Submit an email",
        description=schema.EMAIL_CREATE,
        request=InputSerializer,
        parameters=[schema.IDEMPOTENCY_KEY, schema.LOCATION, schema.IDEMPOTENT_REPLAYED],
        responses={
            202: OpenApiResponse(EmailDetailApi.OutputSerializer, description="Accepted: the email, PENDING."),
            **schema.errors(400, 401, 413, 415, 422, 429, 503),
        },
        examples=[schema.EMAIL_EXAMPLE, schema.TEMPLATE_EXAMPLE, schema.INLINE_IMAGE_EXAMPLE],
    )
    def post(self, request):
        fields = _validated(self.InputSerializer, request.data)

        def produce():
            email = email_create(api_key=request.auth, **fields)
            # The contract answers a submit with the email itself, as GET shows it.
            return status.HTTP_202_ACCEPTED, _reusable(EmailDetailApi.OutputSerializer).to_representation(email)

        return _idempotently(request, produce)


def email_create_fields(data) -> dict:
    """`data` validated exactly as POST /emails validates its body (for other front doors, such as the
    dashboard's form); raises InvalidFields naming each bad field, with DRF's messages as plain strings."""
    try:
        return _validated(EmailCreateApi.InputSerializer, data)
    except ValidationError as exc:
        raise InvalidFields(_plain(exc.detail)) from None


def _plain(detail):
    """A ValidationError's detail with each ErrorDetail as the str it is, nested as DRF nests them."""
    if isinstance(detail, dict):
        return {name: _plain(value) for name, value in detail.items()}
    if isinstance(detail, list):
        return [_plain(value) for value in detail]
    return str(detail)


@extend_schema_field(
    {
        "type": "array",
        "minItems": 1,
        "maxItems": 500,
        # Any item is taken: one that is not a valid EmailCreate is refused in its own result, not with a 400.
        "items": {"anyOf": [{"$ref": "#/components/schemas/EmailCreateRequest"}, {}]},
    }
)
class BatchEmailsField(BoundedListField):
    def __init__(self, **kwargs) -> None:
        # A null item too: it is refused in its own result, as any other item that is not an email.
        super().__init__(child=ParsedJson(allow_null=True), min_length=1, max_length=500, **kwargs)


class EmailBatchCreateApi(APIView):
    @extend_schema_serializer(component_name="EmailBatchCreate")
    class InputSerializer(RefusesUnknownFields, serializers.Serializer):
        """Up to 500 emails in one request. Any other field is a 400 naming it."""

        emails = BatchEmailsField(
            help_text="1 to 500 emails, each as `POST /api/v1/emails` takes it; one it would refuse is refused in "
            'its result (`{"errors": ...}`), not with a 400.'
        )

    @extend_schema(
        operation_id="email_batch_create",
        summary="Submit up to 500 emails",
        description=schema.EMAIL_BATCH_CREATE,
        request=InputSerializer,
        parameters=[schema.IDEMPOTENCY_KEY, schema.IDEMPOTENT_REPLAYED],
        responses={
            202: OpenApiResponse(
                description="Accepted: one result per email, in order.",
                response=inline_serializer(
                    "BatchResults",
                    {
                        "results": serializers.ListField(
                            child=serializers.JSONField(),
                            help_text='One per email, in order: its summary (as the list shows it), or `{"errors": '
                            '{"<field>": ["..."]}}`.',
                        )
                    },
                ),
            ),
            **schema.BATCH_ERRORS,
        },
    )
    def post(self, request):
        bodies = _validated(self.InputSerializer, request.data)["emails"]
        # Each item is validated exactly as POST /emails validates its body.
        items, errors = [], {}
        for index, body in enumerate(bodies):
            try:
                items.append(email_create_fields(body))
            except InvalidFields as exc:
                errors[index] = exc.errors
                items.append(None)

        def produce():
            outcomes = iter(email_create_batch(api_key=request.auth, items=[i for i in items if i is not None]))
            summary = _reusable(EmailListApi.OutputSerializer).to_representation  # of a row, as of an Email
            results = []
            for index, item in enumerate(items):
                outcome = {"errors": errors[index]} if item is None else next(outcomes)
                results.append(summary(outcome["email"]) if "email" in outcome else outcome)
            return status.HTTP_202_ACCEPTED, {"results": results}

        return _idempotently(request, produce)


class FilterTimeField(serializers.DateTimeField):
    """A time to filter by. One that is valid ISO 8601 but out of range in UTC (year 1 east of UTC, year 9999
    west of it) is the first or the last time there is: no email is before or after it."""

    def enforce_timezone(self, value: datetime.datetime) -> datetime.datetime:
        if timezone.is_aware(value) and value.year in (1, 9999):
            try:
                return value.astimezone(datetime.UTC)
            except OverflowError:
                return (
                    datetime.datetime.min.replace(tzinfo=datetime.UTC)
                    if value.year == 1
                    else (datetime.datetime.max.replace(tzinfo=datetime.UTC))
                )
        return super().enforce_timezone(value)


class EmailListApi(APIView):
    class FilterSerializer(RefusesUnknownFields, serializers.Serializer):
        unknown_field_message = "Unknown query parameter."

        status = AnyCaseChoiceField(choices=schema.STATUS_CHOICES, required=False, help_text="In any case.")
        tag = StrictCharField(
            required=False,
            max_length=MAX_TAG_LENGTH,
            help_text="Emails with this tag; at most 100 characters, as a tag.",
        )
        to = StrictCharField(
            required=False,
            max_length=MAX_ADDRESS_LENGTH,
            help_text="Emails to this address (in to, cc or bcc), in any case; at most 400 characters.",
        )
        created_after = FilterTimeField(required=False, help_text="ISO 8601; without a zone, UTC.")
        created_before = FilterTimeField(required=False, help_text="ISO 8601; without a zone, UTC.")
        cursor = StrictCharField(
            required=False,
            single_line=True,
            max_length=MAX_CURSOR_LENGTH,
            validators=[RegexValidator(CURSOR, "Invalid cursor: send the one a `next` URL carries, as it is.")],
            help_text="Where a page starts: opaque, and written by the server. Send only the value a `next` URL "
            "carries (follow `next`, which has it); any other is a 400.",
        )
        limit = serializers.IntegerField(
            required=False, min_value=1, max_value=500, default=50, help_text="Emails per page."
        )

    @extend_schema_serializer(component_name="EmailSummary")
    class OutputSerializer(FieldsOnce, serializers.Serializer):
        """An email without its bodies, headers, attachments and events (`GET /api/v1/emails/{id}` has them)."""

        id = serializers.UUIDField()
        status = serializers.CharField(help_text=schema.STATUSES)
        from_email = serializers.CharField(source="from_email")
        to = serializers.ListField(child=serializers.CharField())
        cc = serializers.ListField(child=serializers.CharField())
        bcc = serializers.ListField(child=serializers.CharField())
        subject = serializers.CharField()
        tags = serializers.ListField(child=serializers.CharField())
        metadata = serializers.DictField(child=serializers.CharField())
        attempts = serializers.IntegerField(help_text=schema.ATTEMPTS)
        provider = serializers.CharField(help_text=schema.PROVIDER)
        provider_message_id = serializers.CharField(help_text=schema.PROVIDER_MESSAGE_ID)
        last_error = serializers.CharField(help_text=schema.LAST_ERROR)
        created_at = UtcDateTimeField(help_text="When it was accepted, in UTC.")
        send_at = UtcDateTimeField(allow_null=True, help_text="Not sent before this time; null: at once.")
        sent_at = UtcDateTimeField(allow_null=True, help_text="When a provider accepted it; null until then.")

        def get_fields(self):
            return _api_name(super().get_fields(), "from_email", "from")

    @extend_schema(
        operation_id="email_list",
        summary="The key's emails, newest first",
        description=schema.EMAIL_LIST,
        parameters=[FilterSerializer],
        responses={
            200: OpenApiResponse(
                description="A page of emails.",
                response=inline_serializer(
                    "EmailPage",
                    {
                        "results": OutputSerializer(many=True, help_text="Newest first."),
                        "next": serializers.URLField(
                            allow_null=True, help_text="The next page, with the same filters; null: this is the last."
                        ),
                    },
                ),
            ),
            400: schema.BAD_QUERY,
            **schema.errors(401, 429, 503),
        },
    )
    def get(self, request):
        # A plain dict: DRF reads an empty value in a QueryDict as an absent one, so `?tag=` would list every
        # email and `?cursor=` start again at the first page. A parameter given is validated as given.
        params = dict(_validated(self.FilterSerializer, request.query_params.dict()))
        cursor, limit = params.pop("cursor", None), params.pop("limit")
        emails = selectors.email_list(api_key=request.auth, **params)
        if cursor:
            try:
                emails = selectors.after_cursor(emails, cursor)
            except ValueError as exc:
                raise ValidationError({"cursor": [str(exc)]}) from None
        page = list(emails[: limit + 1])
        next_url = None
        if len(page) > limit:
            page = page[:limit]
            query = request.query_params.copy()
            query["cursor"] = selectors.encode_cursor(page[-1])
            next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
        summaries = [_reusable(self.OutputSerializer).to_representation(email) for email in page]
        return Response({"results": summaries, "next": next_url})


# /emails is one path for two operations: GET lists (EmailListApi), POST creates (EmailCreateApi). A comment,
# not a docstring: the schema would show a view's docstring as both operations' description.
class EmailCollectionApi(EmailListApi, EmailCreateApi):
    pass


class EmailResendApi(APIView):
    @extend_schema(
        operation_id="email_resend",
        summary="Send an email again, as a new email",
        description=schema.EMAIL_RESEND,
        request=None,
        parameters=[schema.EMAIL_ID, schema.LOCATION],
        responses={
            202: OpenApiResponse(EmailDetailApi.OutputSerializer, description="Accepted: the new email, PENDING."),
            **schema.RESEND_ERRORS,
        },
    )
    def post(self, request, email_id):
        original = selectors.email_get(api_key=request.auth, email_id=email_id)
        if original is None:
            raise NotFound("No such email.")
        email = email_resend(email=original)
        data = _reusable(EmailDetailApi.OutputSerializer).to_representation(email)
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": f"/api/v1/emails/{email.id}"})


class StatsApi(APIView):
    @extend_schema_serializer(component_name="Stats")
    class OutputSerializer(serializers.Serializer):
        """The key's emails at a glance."""

        counts = serializers.DictField(
            child=serializers.IntegerField(), help_text="Emails by status, every status (0 when none)."
        )
        oldest_pending_age_seconds = serializers.FloatField(
            help_text="How long the longest-waiting due PENDING email has waited; 0 when none waits."
        )
        sent_last_hour = serializers.IntegerField(help_text="Emails sent in the last hour.")
        failed_last_hour = serializers.IntegerField(help_text="Emails that became FAILED in the last hour.")

    @extend_schema(
        operation_id="stats",
        summary="Counts by status, and how long mail waits",
        description=schema.STATS,
        responses={
            200: OpenApiResponse(OutputSerializer, description="The key's figures."),
            **schema.errors(401, 429, 503),
        },
    )
    def get(self, request):
        return Response(_reusable(self.OutputSerializer).to_representation(selectors.email_stats(api_key=request.auth)))
