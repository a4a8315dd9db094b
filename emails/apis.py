import datetime
import hashlib
import json

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
from rest_framework.response import Response
from rest_framework.views import APIView

from emails import schema, selectors
from emails.drf_speedups import FieldsOnce, reusable, validated
from emails.errors import InvalidFields, TooLarge
from emails.fields import (
    MAX_ADDRESS_LENGTH,
    MAX_TAG_LENGTH,
    AnyCaseChoiceField,
    BoundedListField,
    NulFreeTextField,
    ParsedJson,
    RefusesUnknownFields,
    StrictCharField,
    UtcDateTimeField,
    api_names,
    attachment_size,
)
from emails.services import email_create, email_create_batch, email_fields, email_resend, idempotent
from emails.services.validating import EmailFields

# A list cursor as the server writes it (selectors.encode_cursor): URL-safe base64 of the last row's time and id.
CURSOR = r"^[A-Za-z0-9_-]+={0,2}$"
MAX_CURSOR_LENGTH = 128


def idempotently(request, produce) -> Response:
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
        erased_at = UtcDateTimeField(
            allow_null=True,
            help_text="When retention erased its subject, bodies, headers and attachments (they show empty); null: "
            "never.",
        )
        message_stream = serializers.CharField(help_text="Its message stream, as submitted; empty: none.")
        track_opens = serializers.BooleanField(allow_null=True, help_text="Open tracking asked for; null: not asked.")
        track_clicks = serializers.BooleanField(allow_null=True, help_text="Click tracking asked for; null: not asked.")
        events = EventSerializer(many=True, source="events.all", help_text="Its history, oldest first.")

        def get_fields(self):
            return api_names(super().get_fields(), from_email="from")

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
        return Response(reusable(self.OutputSerializer).to_representation(email))


class EmailCreateApi(APIView):
    InputSerializer = EmailFields

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
        fields = validated(self.InputSerializer, request.data)

        def produce():
            email = email_create(api_key=request.auth, **fields)
            # The contract answers a submit with the email itself, as GET shows it.
            return status.HTTP_202_ACCEPTED, reusable(EmailDetailApi.OutputSerializer).to_representation(email)

        return idempotently(request, produce)


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
        bodies = validated(self.InputSerializer, request.data)["emails"]
        # Each item is validated exactly as POST /emails validates its body.
        items, errors = [], {}
        for index, body in enumerate(bodies):
            try:
                items.append(email_fields(body))
            except InvalidFields as exc:
                errors[index] = exc.errors
                items.append(None)

        def produce():
            outcomes = iter(email_create_batch(api_key=request.auth, items=[i for i in items if i is not None]))
            summary = reusable(EmailListApi.OutputSerializer).to_representation  # of a row, as of an Email
            results = []
            for index, item in enumerate(items):
                if item is None:
                    results.append({"errors": errors[index]})
                    continue
                outcome = next(outcomes)
                if "email" in outcome:
                    results.append(summary(outcome["email"]))
                elif isinstance(outcome["refused"], TooLarge):
                    results.append({"errors": {"size": [outcome["refused"].message]}})
                else:
                    results.append({"errors": outcome["refused"].errors})
            return status.HTTP_202_ACCEPTED, {"results": results}

        return idempotently(request, produce)


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
        tag = NulFreeTextField(
            required=False,
            max_length=MAX_TAG_LENGTH,
            help_text="Emails with this tag; at most 100 characters, as a tag.",
        )
        to = NulFreeTextField(
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
            return api_names(super().get_fields(), from_email="from")

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
        params = dict(validated(self.FilterSerializer, request.query_params.dict()))
        cursor, limit = params.pop("cursor", None), params.pop("limit")
        page, next_url = keyset_page(request, selectors.email_list(api_key=request.auth, **params), cursor, limit)
        summaries = [reusable(self.OutputSerializer).to_representation(email) for email in page]
        return Response({"results": summaries, "next": next_url})


def keyset_page(request, rows, cursor: str | None, limit: int) -> tuple[list, str | None]:
    """The page of `rows` (newest first by created_at, id) after `cursor`, and the URL of the next page, which
    repeats the request's query with the last row's cursor (None on the last page). A bad cursor is a 400
    naming `cursor`."""
    if cursor:
        try:
            rows = selectors.after_cursor(rows, cursor)
        except ValueError as exc:
            raise ValidationError({"cursor": [str(exc)]}) from None
    page = list(rows[: limit + 1])
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    query = request.query_params.copy()
    query["cursor"] = selectors.encode_cursor(page[-1])
    return page, request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


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
        data = reusable(EmailDetailApi.OutputSerializer).to_representation(email)
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
        test_key = serializers.BooleanField(
            help_text="Whether the key is a test key: its emails are never handed to a provider (they end SENT by "
            "the provider `test`)."
        )

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
        return Response(reusable(self.OutputSerializer).to_representation(selectors.email_stats(api_key=request.auth)))
