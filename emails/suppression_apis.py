"""The suppressions API: the addresses a key's emails are not sent to, listed, added, lifted; and the bulk retry of
a key's failed emails."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator, validate_email
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from emails import schema
from emails.apis import CURSOR, MAX_CURSOR_LENGTH, FilterTimeField, idempotently, keyset_page
from emails.drf_speedups import FieldsOnce, reusable, validated
from emails.fields import NulFreeTextField, RefusesUnknownFields, StrictCharField, UtcDateTimeField, canonical_mailbox
from emails.models import Email, Suppression
from emails.services.delivery_events import MAX_ADDRESS, suppression_add_for_key, suppression_remove
from emails.services.retrying import emails_retry_failed

MAX_REASON_LENGTH = 500
# A page of the list: bounds and default as the emails list's.
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
MAX_PROVIDER_LENGTH = Email._meta.get_field("provider").max_length
MAX_ERROR_FILTER_LENGTH = 200

# What a key is told of where its suppression came from: Suppression.reason, named for the client.
SOURCES = {
    Suppression.Reason.MANUAL: "api",
    Suppression.Reason.BOUNCED: "bounce",
    Suppression.Reason.COMPLAINED: "complaint",
}


@extend_schema_field({"type": "string", "maxLength": MAX_ADDRESS})
class BareAddressField(StrictCharField):
    """An address alone (no name, no angle brackets), compared as sending compares recipients."""

    def __init__(self, **kwargs) -> None:
        super().__init__(single_line=True, max_length=MAX_ADDRESS, **kwargs)

    def to_internal_value(self, data):
        address = super().to_internal_value(data).strip()
        try:
            validate_email(address)
        except DjangoValidationError:
            raise serializers.ValidationError(f"{address[:100]!r} is not an email address.") from None
        return canonical_mailbox(address)


class SuppressionListApi(APIView):
    class FilterSerializer(RefusesUnknownFields, serializers.Serializer):
        unknown_field_message = "Unknown query parameter."

        cursor = StrictCharField(
            required=False,
            single_line=True,
            max_length=MAX_CURSOR_LENGTH,
            validators=[RegexValidator(CURSOR, "Invalid cursor: send the one a `next` URL carries, as it is.")],
            help_text="Where a page starts: opaque, and written by the server. Send only the value a `next` URL "
            "carries (follow `next`, which has it); any other is a 400.",
        )
        limit = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=MAX_PAGE_SIZE,
            default=DEFAULT_PAGE_SIZE,
            help_text="Suppressions per page.",
        )

    @extend_schema_serializer(component_name="Suppression")
    class OutputSerializer(FieldsOnce, serializers.Serializer):
        """An address the key's emails are not sent to."""

        address = serializers.CharField(help_text="Bare and lower-cased, as recipients are compared.")
        reason = serializers.CharField(
            source="detail",
            help_text="Why: the text given when it was added, or what the provider reported for a bounce or "
            "complaint; may be empty.",
        )
        source = serializers.SerializerMethodField(
            help_text="Where it came from: api (added through this API), bounce (a provider reported a hard "
            "bounce of an email of the key's), complaint (its recipient marked one as spam)."
        )
        created_at = UtcDateTimeField(help_text="When it was made, in UTC.")

        def get_source(self, suppression) -> str:
            return SOURCES.get(suppression.reason, "api")

    @extend_schema(
        operation_id="suppression_list",
        summary="The key's suppressed addresses, newest first",
        description=schema.SUPPRESSION_LIST,
        parameters=[FilterSerializer],
        responses={
            200: OpenApiResponse(
                description="A page of suppressions.",
                response=inline_serializer(
                    "SuppressionPage",
                    {
                        "results": OutputSerializer(many=True, help_text="Newest first."),
                        "next": serializers.URLField(
                            allow_null=True, help_text="The next page; null: this is the last."
                        ),
                    },
                ),
            ),
            400: schema.BAD_QUERY,
            **schema.errors(401, 429, 503),
        },
    )
    def get(self, request):
        # A plain dict, as the emails list reads its query: `?cursor=` is refused rather than read as absent.
        params = validated(self.FilterSerializer, request.query_params.dict())
        cursor, limit = params.get("cursor"), params["limit"]
        suppressions = Suppression.objects.filter(api_key=request.auth).order_by("-created_at", "-id")
        page, next_url = keyset_page(request, suppressions, cursor, limit)
        summary = reusable(self.OutputSerializer).to_representation
        return Response({"results": [summary(s) for s in page], "next": next_url})


class SuppressionCreateApi(APIView):
    @extend_schema_serializer(component_name="SuppressionCreate")
    class InputSerializer(RefusesUnknownFields, serializers.Serializer):
        """An address to suppress for the key's emails. Any other field is a 400 naming it."""

        address = BareAddressField(help_text="The address alone, without a name: `bob@example.org`, in any case.")
        reason = StrictCharField(
            required=False,
            allow_blank=True,
            default="",
            max_length=MAX_REASON_LENGTH,
            help_text=f"Why, for your own records; at most {MAX_REASON_LENGTH} characters.",
        )

    @extend_schema(
        operation_id="suppression_create",
        summary="Suppress an address for the key's emails",
        description=schema.SUPPRESSION_CREATE,
        request=InputSerializer,
        responses={
            200: OpenApiResponse(
                SuppressionListApi.OutputSerializer, description="Already suppressed: the suppression as it was."
            ),
            201: OpenApiResponse(SuppressionListApi.OutputSerializer, description="Suppressed from now on."),
            **schema.SUPPRESSION_CREATE_ERRORS,
        },
        examples=[schema.SUPPRESSION_EXAMPLE],
    )
    def post(self, request):
        fields = validated(self.InputSerializer, request.data)
        suppression, created = suppression_add_for_key(
            api_key_id=request.auth.id, address=fields["address"], detail=fields["reason"]
        )
        return Response(
            reusable(SuppressionListApi.OutputSerializer).to_representation(suppression),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


# /suppressions is one path for two operations: GET lists, POST adds. A comment, not a docstring: the schema
# would show a view's docstring as both operations' description.
class SuppressionCollectionApi(SuppressionListApi, SuppressionCreateApi):
    pass


class SuppressionDetailApi(APIView):
    @extend_schema(
        operation_id="suppression_delete",
        summary="Lift a suppression",
        description=schema.SUPPRESSION_DELETE,
        parameters=[schema.SUPPRESSION_ADDRESS],
        responses={
            204: OpenApiResponse(description="Lifted: the key's emails to the address are sent again."),
            404: schema.SUPPRESSION_NOT_FOUND,
            **schema.errors(401, 429, 503),
        },
    )
    def delete(self, request, address):
        if len(address) > MAX_ADDRESS or not suppression_remove(api_key_id=request.auth.id, address=address):
            raise NotFound("No such suppression.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class EmailRetryApi(APIView):
    @extend_schema_serializer(component_name="EmailRetry")
    class InputSerializer(RefusesUnknownFields, serializers.Serializer):
        """Which failed emails to send again; the filters combine. Any other field is a 400 naming it."""

        status = serializers.ChoiceField(
            choices=[(Email.Status.FAILED, schema.STATUS_MEANINGS[Email.Status.FAILED])],
            help_text="FAILED: only failed emails are retried, and saying so keeps a request from meaning more.",
        )
        created_after = FilterTimeField(required=False, help_text="Emails accepted after this time; ISO 8601, "
                                        "without a zone UTC.")  # fmt: skip
        created_before = FilterTimeField(required=False, help_text="Emails accepted before this time; ISO 8601, "
                                         "without a zone UTC.")  # fmt: skip
        provider = NulFreeTextField(
            required=False,
            max_length=MAX_PROVIDER_LENGTH,
            help_text="Emails whose latest try was at this provider (its name as emails show it in `provider`).",
        )
        error_contains = NulFreeTextField(
            required=False,
            max_length=MAX_ERROR_FILTER_LENGTH,
            help_text="Emails whose `last_error` contains this text, in any case.",
        )

    @extend_schema(
        operation_id="email_retry",
        summary="Send the key's failed emails again",
        description=schema.EMAIL_RETRY,
        request=InputSerializer,
        parameters=[schema.IDEMPOTENCY_KEY, schema.IDEMPOTENT_REPLAYED],
        responses={
            202: OpenApiResponse(
                description="Queued again: how many.",
                response=inline_serializer(
                    "EmailRetryCount",
                    {"count": serializers.IntegerField(help_text="How many emails went back to PENDING.")},
                ),
            ),
            **schema.EMAIL_RETRY_ERRORS,
        },
        examples=[schema.EMAIL_RETRY_EXAMPLE],
    )
    def post(self, request):
        fields = validated(self.InputSerializer, request.data)
        fields.pop("status")

        def produce():
            return status.HTTP_202_ACCEPTED, {"count": emails_retry_failed(api_key=request.auth, **fields)}

        # A repeat of a request whose answer was lost gets its count again, rather than a count of 0.
        return idempotently(request, produce)
