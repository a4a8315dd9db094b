"""The webhooks API: a key's webhooks, made, listed, shown, deleted, and their deliveries."""

from __future__ import annotations

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

from emails import schema, webhook_selectors
from emails.drf_speedups import FieldsOnce, reusable, validated
from emails.fields import BoundedListField, RefusesUnknownFields, StrictCharField, UtcDateTimeField
from emails.models import WEBHOOK_EVENTS, WebhookMessage
from emails.services.webhooks import MAX_EVENTS, MAX_URL_LENGTH, URL_PATTERN, webhook_create, webhook_delete

MAX_DELIVERIES = 100


@extend_schema_field({"type": "string", "maxLength": MAX_URL_LENGTH, "pattern": URL_PATTERN})
class WebhookUrlField(StrictCharField):
    def __init__(self, **kwargs) -> None:
        super().__init__(single_line=True, max_length=MAX_URL_LENGTH, **kwargs)


@extend_schema_field(
    {
        "type": "array",
        "maxItems": MAX_EVENTS,
        "uniqueItems": True,
        "items": {"type": "string", "enum": WEBHOOK_EVENTS},
    }
)
class WebhookEventsField(BoundedListField):
    def __init__(self, **kwargs) -> None:
        super().__init__(child=StrictCharField(max_length=50), max_length=MAX_EVENTS, **kwargs)


class WebhookDetailApi(APIView):
    @extend_schema_serializer(component_name="Webhook")
    class OutputSerializer(FieldsOnce, serializers.Serializer):
        """A webhook, without its secret (shown only when it was made)."""

        id = serializers.UUIDField()
        url = serializers.CharField()
        events = serializers.ListField(
            child=serializers.CharField(), help_text="The events it is told of; empty: every event."
        )
        active = serializers.BooleanField(help_text="Whether events are sent to it.")
        disabled_reason = serializers.CharField(
            help_text="Why it is no longer active (its receiver answered 410 Gone); empty while active."
        )
        created_at = UtcDateTimeField(help_text="When it was made, in UTC.")

    @extend_schema(
        operation_id="webhook_get",
        summary="A webhook",
        description=schema.WEBHOOK_GET,
        parameters=[schema.WEBHOOK_ID],
        responses={
            200: OpenApiResponse(OutputSerializer, description="The webhook."),
            404: schema.WEBHOOK_NOT_FOUND,
            **schema.errors(401, 429, 503),
        },
    )
    def get(self, request, webhook_id):
        webhook = _webhook(request, webhook_id)
        return Response(reusable(self.OutputSerializer).to_representation(webhook))

    @extend_schema(
        operation_id="webhook_delete",
        summary="Delete a webhook",
        description=schema.WEBHOOK_DELETE,
        parameters=[schema.WEBHOOK_ID],
        responses={
            204: OpenApiResponse(description="Deleted: nothing more is sent to it."),
            404: schema.WEBHOOK_NOT_FOUND,
            **schema.errors(401, 429, 503),
        },
    )
    def delete(self, request, webhook_id):
        webhook_delete(webhook=_webhook(request, webhook_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _webhook(request, webhook_id):
    webhook = webhook_selectors.webhook_get(api_key=request.auth, webhook_id=webhook_id)
    if webhook is None:
        raise NotFound("No such webhook.")
    return webhook


class WebhookCreateApi(APIView):
    @extend_schema_serializer(component_name="WebhookCreate")
    class InputSerializer(RefusesUnknownFields, serializers.Serializer):
        """A webhook to make. Any other field is a 400 naming it."""

        url = WebhookUrlField(
            help_text="Where events are POSTed: http:// or https://, at most 2000 characters, no user name or "
            "password; its host must resolve to public addresses."
        )
        events = WebhookEventsField(
            required=False,
            help_text=f"The events to be told of, each once: {schema.WEBHOOK_EVENT_TYPES} Left out or empty: "
            "every event, those added later too.",
        )

    @extend_schema_serializer(component_name="WebhookCreated")
    class OutputSerializer(WebhookDetailApi.OutputSerializer):
        """The webhook just made, with its secret: shown only here."""

        secret = serializers.CharField(
            help_text="`whsec_` and 32 random bytes in base64: the key that signs every request to the URL "
            "(Standard Webhooks). Shown only in this answer."
        )

    @extend_schema(
        operation_id="webhook_create",
        summary="Make a webhook",
        description=schema.WEBHOOK_CREATE,
        request=InputSerializer,
        parameters=[schema.WEBHOOK_LOCATION],
        responses={
            201: OpenApiResponse(OutputSerializer, description="Made: the webhook, with its secret."),
            **schema.WEBHOOK_CREATE_ERRORS,
        },
        examples=[schema.WEBHOOK_EXAMPLE],
    )
    def post(self, request):
        fields = validated(self.InputSerializer, request.data)
        webhook = webhook_create(api_key=request.auth, **fields)
        return Response(
            reusable(self.OutputSerializer).to_representation(webhook),
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/webhooks/{webhook.id}"},
        )


class WebhookListApi(APIView):
    @extend_schema(
        operation_id="webhook_list",
        summary="The key's webhooks, newest first",
        description=schema.WEBHOOK_LIST,
        responses={
            200: OpenApiResponse(
                description="Every webhook of the key's.",
                response=inline_serializer(
                    "WebhookList", {"results": WebhookDetailApi.OutputSerializer(many=True, help_text="Newest first.")}
                ),
            ),
            **schema.errors(401, 429, 503),
        },
    )
    def get(self, request):
        webhooks = webhook_selectors.webhook_list(api_key=request.auth)
        summary = reusable(WebhookDetailApi.OutputSerializer).to_representation
        return Response({"results": [summary(webhook) for webhook in webhooks]})


# /webhooks is one path for two operations: GET lists, POST creates. A comment, not a docstring: the schema
# would show a view's docstring as both operations' description.
class WebhookCollectionApi(WebhookListApi, WebhookCreateApi):
    pass


class WebhookDeliveryListApi(APIView):
    class FilterSerializer(RefusesUnknownFields, serializers.Serializer):
        unknown_field_message = "Unknown query parameter."

        limit = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=MAX_DELIVERIES,
            default=MAX_DELIVERIES,
            help_text="How many of the latest attempts.",
        )

    @extend_schema_serializer(component_name="WebhookDelivery")
    class OutputSerializer(FieldsOnce, serializers.Serializer):
        """One attempt at delivering one event to the webhook."""

        event = serializers.CharField(help_text="The event's type: email.sent, email.bounced, ...")
        message_id = serializers.SerializerMethodField(
            help_text="The event's id, as the `webhook-id` header carried it: the same on every retry of one event."
        )
        status_code = serializers.IntegerField(
            allow_null=True, help_text="The receiver's HTTP status code; null: no answer (see `error`)."
        )
        error = serializers.CharField(
            help_text="Why there was no answer (a timeout, a refused connection); empty when there was one."
        )
        at = UtcDateTimeField(help_text="When the attempt was made, in UTC.")

        def get_message_id(self, attempt) -> str:
            return WebhookMessage.header_id(attempt["message_id"])

    @extend_schema(
        operation_id="webhook_deliveries",
        summary="A webhook's latest delivery attempts",
        description=schema.WEBHOOK_DELIVERIES,
        parameters=[schema.WEBHOOK_ID, FilterSerializer],
        responses={
            200: OpenApiResponse(
                description="The latest attempts, newest first.",
                response=inline_serializer(
                    "WebhookDeliveryList", {"results": OutputSerializer(many=True, help_text="Newest first.")}
                ),
            ),
            400: schema.BAD_QUERY,
            404: schema.WEBHOOK_NOT_FOUND,
            **schema.errors(401, 429, 503),
        },
    )
    def get(self, request, webhook_id):
        params = validated(self.FilterSerializer, request.query_params.dict())
        webhook = _webhook(request, webhook_id)
        attempts = webhook_selectors.webhook_deliveries(webhook=webhook, limit=params["limit"])
        delivery = reusable(self.OutputSerializer).to_representation
        return Response({"results": [delivery(attempt) for attempt in attempts]})
