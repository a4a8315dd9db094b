import functools
import hashlib
import json
from functools import cached_property

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.fields import SkipField, get_error_detail
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from emails import schema, selectors
from emails.fields import (
    AddressField,
    AddressListField,
    AttachmentSerializer,
    BoundedDateTimeField,
    BoundedListField,
    HeadersField,
    MetadataField,
    ParsedJson,
    StrictCharField,
    UtcDateTimeField,
)
from emails.models import Email
from emails.services import email_create, email_create_batch, email_resend, idempotent


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
    """Answers with `produce()`'s (status, body), once per Idempotency-Key (when the client sends one)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        status_code, body = produce()
    else:
        if not key or len(key) > 255:
            raise ValidationError({"Idempotency-Key": ["Between 1 and 255 characters."]})
        canonical = json.dumps([request.path, request.data], sort_keys=True, separators=(",", ":"))
        request_hash = hashlib.sha256(canonical.encode()).hexdigest()
        status_code, body = idempotent(api_key=request.auth, key=key, request_hash=request_hash, produce=produce)
    headers = {"Location": f"/api/v1/emails/{body['id']}"} if isinstance(body, dict) and "id" in body else {}
    return Response(body, status=status_code, headers=headers)


class EmailDetailApi(APIView):
    @extend_schema_serializer(component_name="Email")
    class OutputSerializer(FieldsOnce, serializers.Serializer):
        class EventSerializer(serializers.Serializer):
            type = serializers.CharField()
            at = UtcDateTimeField()
            provider = serializers.CharField()
            detail = serializers.CharField()

        class AttachmentInfoSerializer(serializers.Serializer):
            filename = serializers.CharField()
            content_type = serializers.CharField()
            size = serializers.SerializerMethodField()

            def get_size(self, attachment) -> int:
                from emails.fields import attachment_size

                return attachment_size(attachment)

        id = serializers.UUIDField()
        status = serializers.CharField()
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
        template = serializers.CharField()
        tags = serializers.ListField(child=serializers.CharField())
        metadata = serializers.DictField(child=serializers.CharField())
        attempts = serializers.IntegerField()
        provider = serializers.CharField()
        provider_message_id = serializers.CharField()
        last_error = serializers.CharField()
        created_at = UtcDateTimeField()
        send_at = UtcDateTimeField(allow_null=True)
        sent_at = UtcDateTimeField(allow_null=True)
        resent_from = serializers.UUIDField(source="resent_from_id", allow_null=True)
        events = EventSerializer(many=True, source="events.all")

        def get_fields(self):
            return _api_name(super().get_fields(), "from_email", "from")

    @extend_schema(operation_id="email_get", summary="An email, with its events", responses={200: OutputSerializer,
                   **schema.ERRORS, **schema.NOT_FOUND})  # fmt: skip
    def get(self, request, email_id):
        email = selectors.email_get(api_key=request.auth, email_id=email_id)
        if email is None:
            raise NotFound("No such email.")
        return Response(_reusable(self.OutputSerializer).to_representation(email))


class EmailCreateApi(APIView):
    @extend_schema_serializer(component_name="EmailCreate")
    class InputSerializer(FieldsOnce, serializers.Serializer):
        from_email = AddressField(source="from_email", help_text="`addr` or `Name <addr>`.")
        to = AddressListField(min_length=1, help_text="Addresses (or one as a string); with cc and bcc, at most 50.")
        cc = AddressListField(required=False)
        bcc = AddressListField(required=False)
        reply_to = AddressListField(required=False, help_text="At most 50.")
        subject = StrictCharField(
            single_line=True, max_length=998, required=False, help_text="Required unless the template gives it."
        )
        text = StrictCharField(
            required=False, allow_blank=True, trim_whitespace=False, help_text="Text and/or html, unless a template."
        )
        html = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
        headers = HeadersField(
            required=False,
            help_text="Extra headers; not those with their own field, nor those only a relay, a signer or a provider "
            "sets (Received, Return-Path, DKIM-Signature, ARC-*, X-SMTPAPI, ...); no CR/LF or control characters.",
        )
        attachments = BoundedListField(
            child=AttachmentSerializer(), required=False, max_length=20, help_text="Count towards the 10 MB per email."
        )
        template = StrictCharField(
            single_line=True, max_length=100, required=False, help_text="A stored template's name (see the admin)."
        )
        context = serializers.DictField(
            required=False, help_text="The template's variables; escaped in html, not in subject and text."
        )
        tags = BoundedListField(
            child=StrictCharField(single_line=True, max_length=100), required=False, max_length=20,
            help_text="Filter the list with ?tag=.",
        )  # fmt: skip
        metadata = MetadataField(required=False, help_text="Up to 50 string values, returned as given.")
        send_at = BoundedDateTimeField(
            required=False, allow_null=True, help_text="ISO 8601; the email waits PENDING until then."
        )

        def get_fields(self):
            return _api_name(super().get_fields(), "from_email", "from")

        @cached_property
        def _field_names(self) -> frozenset:
            return frozenset(self.fields)

        def to_internal_value(self, data):
            if not isinstance(data, dict):
                return super().to_internal_value(data)  # DRF's error for a body that is not an object
            unknown = sorted(set(data) - self._field_names)
            if unknown:
                # Named as sent, escaped when it holds what JSON output or PostgreSQL cannot (NUL, surrogates).
                shown = (name if name.isprintable() else name.encode("unicode_escape").decode() for name in unknown)
                raise serializers.ValidationError({name: ["Unknown field."] for name in shown})
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
            return attrs

    @extend_schema(
        operation_id="email_create",
        summary="Submit an email",
        request=InputSerializer,
        parameters=[schema.IDEMPOTENCY_KEY],
        responses={202: EmailDetailApi.OutputSerializer, **schema.WRITE_ERRORS},
        examples=[schema.EMAIL_EXAMPLE, schema.TEMPLATE_EXAMPLE],
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
    dashboard's form); raises ValidationError naming each bad field."""
    return _validated(EmailCreateApi.InputSerializer, data)


class EmailBatchCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        emails = BoundedListField(
            child=ParsedJson(), min_length=1, max_length=500, help_text="Up to 500 bodies of POST /emails."
        )

    @extend_schema(
        operation_id="email_batch_create",
        summary="Submit up to 500 emails",
        description='One result per item, in order: the accepted email\'s summary, or `{"errors": {...}}` '
        "for an invalid item. Valid items are stored either way.",
        # Documented as a list of EmailCreate bodies; each is validated on its own, so one bad item
        # does not refuse the others.
        request=inline_serializer(
            "EmailBatchCreate",
            {"emails": EmailCreateApi.InputSerializer(many=True, min_length=1, max_length=500)},
        ),
        parameters=[schema.IDEMPOTENCY_KEY],
        responses={
            202: inline_serializer("BatchResults", {"results": serializers.ListField(child=serializers.JSONField())}),
            **schema.WRITE_ERRORS,
        },
    )
    def post(self, request):
        bodies = _validated(self.InputSerializer, request.data)["emails"]
        # Each item is validated exactly as POST /emails validates its body.
        items, errors = [], {}
        for index, body in enumerate(bodies):
            try:
                items.append(email_create_fields(body))
            except serializers.ValidationError as exc:
                errors[index] = exc.detail
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


class EmailListApi(APIView):
    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Email.Status.choices, required=False)
        tag = StrictCharField(required=False)
        to = StrictCharField(required=False)
        created_after = serializers.DateTimeField(required=False)
        created_before = serializers.DateTimeField(required=False)
        cursor = StrictCharField(required=False)
        limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=50)

    @extend_schema_serializer(component_name="EmailSummary")
    class OutputSerializer(FieldsOnce, serializers.Serializer):
        """A summary per email: GET /emails/<id> has the bodies, attachments and events."""

        id = serializers.UUIDField()
        status = serializers.CharField()
        from_email = serializers.CharField(source="from_email")
        to = serializers.ListField(child=serializers.CharField())
        cc = serializers.ListField(child=serializers.CharField())
        bcc = serializers.ListField(child=serializers.CharField())
        subject = serializers.CharField()
        tags = serializers.ListField(child=serializers.CharField())
        metadata = serializers.DictField(child=serializers.CharField())
        attempts = serializers.IntegerField()
        provider = serializers.CharField()
        provider_message_id = serializers.CharField()
        last_error = serializers.CharField()
        created_at = UtcDateTimeField()
        send_at = UtcDateTimeField(allow_null=True)
        sent_at = UtcDateTimeField(allow_null=True)

        def get_fields(self):
            return _api_name(super().get_fields(), "from_email", "from")

    @extend_schema(
        operation_id="email_list",
        summary="The key's emails, newest first",
        parameters=[FilterSerializer],
        responses={
            200: inline_serializer(
                "EmailPage",
                {"results": OutputSerializer(many=True), "next": serializers.URLField(allow_null=True)},
            ),
            **schema.ERRORS,
        },
    )
    def get(self, request):
        params = dict(_validated(self.FilterSerializer, request.query_params))
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


class EmailCollectionApi(EmailListApi, EmailCreateApi):
    """/emails is one path for two operations: GET lists (EmailListApi), POST creates (EmailCreateApi)."""


class EmailResendApi(APIView):
    @extend_schema(
        operation_id="email_resend",
        summary="Send an email again, as a new email",
        request=None,
        responses={202: EmailDetailApi.OutputSerializer, **schema.ERRORS, **schema.NOT_FOUND},
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
        counts = serializers.DictField(child=serializers.IntegerField())
        oldest_pending_age_seconds = serializers.FloatField()
        sent_last_hour = serializers.IntegerField()
        failed_last_hour = serializers.IntegerField()

    @extend_schema(operation_id="stats", summary="Counts by status, and how long mail waits", responses={
                   200: OutputSerializer, **schema.ERRORS})  # fmt: skip
    def get(self, request):
        return Response(_reusable(self.OutputSerializer).to_representation(selectors.email_stats(api_key=request.auth)))
