"""The Postmark-compatible door: POST /email and POST /email/batch, for clients that only swap Postmark's base
URL for ours (anymail's POSTMARK_API_URL, postmarker's root_api_url). A message is read into an email's fields
(emails.postmark_message), validated and stored by the accepting service as any other; refusals are written
as Postmark writes them, here (a message's own) and in postmark_exception_handler() (the request's)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import exceptions, serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from emails import selectors
from emails.authentication import valid_api_key
from emails.errors import SENDER_NOT_ALLOWED, InvalidFields, TooLarge
from emails.exceptions import DATABASE_ERRORS, RETRY_AFTER_SECONDS, log_unavailable
from emails.fields import (
    MAX_ADDRESS_LENGTH,
    MAX_TAG_LENGTH,
    MetadataField,
    RefusesUnknownFields,
    bare_address,
    canonical_mailbox,
)
from emails.models import ApiKey
from emails.postmark_message import (
    BAD_TOKEN,
    INACTIVE_RECIPIENT,
    INVALID_JSON,
    INVALID_REQUEST,
    JSON_REQUIRED,
    MAINTENANCE,
    MAX_ADDRESS_LIST_LENGTH,
    MAX_ATTACHMENTS,
    MAX_HEADERS,
    OK,
    RATE_LIMIT_EXCEEDED,
    SENDER_NOT_FOUND,
    TOO_MANY_BATCH_MESSAGES,
    TRACK_LINKS,
    PostmarkRefusal,
    email_body,
    inactive_message,
    refusal_message,
)
from emails.rendering import RenderUnavailable
from emails.services import email_create, email_create_batch, email_fields

TOKEN_HEADER = "X-Postmark-Server-Token"  # noqa: S105 - a header's name
MAX_BATCH = 500


class ServerTokenAuthentication(BaseAuthentication):
    """`X-Postmark-Server-Token: <API key>`, as Postmark's clients send their server token."""

    def authenticate(self, request):
        token = request.headers.get(TOKEN_HEADER)
        if token is None:
            return None
        api_key = valid_api_key(token) if token.isascii() else None
        if api_key is None:
            raise exceptions.AuthenticationFailed(
                f"The {TOKEN_HEADER} is not a valid server token: give an API key of this service, not revoked."
            )
        return api_key, api_key

    def authenticate_header(self, request) -> str:
        return TOKEN_HEADER  # makes DRF answer 401, not 403


class ServerTokenScheme(OpenApiAuthenticationExtension):
    target_class = ServerTokenAuthentication
    name = "PostmarkServerToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": TOKEN_HEADER,
            "description": "An API key of this service, where a Postmark client sends its server token.",
        }


def _error(status: int, error_code: int, message: str, headers: dict | None = None) -> Response:
    return Response({"ErrorCode": error_code, "Message": message}, status=status, headers=headers)


def postmark_exception_handler(exc, context) -> Response | None:
    """A refused request as Postmark answers it: `{"ErrorCode", "Message"}` with Postmark's status and code."""
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        message = str(exc.detail) if isinstance(exc, exceptions.AuthenticationFailed) else None
        return _error(401, BAD_TOKEN, message or f"No server token: send an API key in the {TOKEN_HEADER} header.")
    if isinstance(exc, PostmarkRefusal):
        return _error(422, exc.error_code, exc.message)
    if isinstance(exc, exceptions.ParseError):
        return _error(422, INVALID_JSON, f"Received invalid JSON input: {exc.detail}")
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return _error(422, JSON_REQUIRED, "The request's Content-Type must be application/json.")
    if isinstance(exc, RequestDataTooBig):
        return _error(
            413, INVALID_REQUEST, f"Request body too large: at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
        )
    if isinstance(exc, exceptions.Throttled):
        wait = {"Retry-After": str(int(exc.wait) + 1)} if exc.wait is not None else None
        return _error(429, RATE_LIMIT_EXCEEDED, "Over this API key's rate: try again after Retry-After seconds.", wait)
    if isinstance(exc, (*DATABASE_ERRORS, RenderUnavailable)):
        log_unavailable(exc)
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return _error(503, MAINTENANCE, "Unavailable for a moment: try again shortly. Nothing was stored.", retry)
    if isinstance(exc, exceptions.APIException):
        return _error(exc.status_code, INVALID_REQUEST, str(exc.detail))
    return None


class _Message:
    """One message of a request, from Postmark's JSON to its answer."""

    def __init__(self, message: Any) -> None:
        self.to = message.get("To") if isinstance(message, dict) else None
        self.answer: dict[str, Any] | None = None
        self.status = 200
        self.fields: dict[str, Any] = {}
        self.inactive: list[str] = []
        self.body: dict[str, Any] = {}
        try:
            self.body = email_body(message)
            self.fields = email_fields(self.body)
        except PostmarkRefusal as exc:
            self.refuse(422, exc.error_code, exc.message)
        except InvalidFields as exc:
            self.refuse_fields(exc)

    def refuse(self, status: int, error_code: int, message: str) -> None:
        self.status, self.answer = status, {"ErrorCode": error_code, "Message": message}

    def refuse_fields(self, refused: InvalidFields) -> None:
        error_code = SENDER_NOT_FOUND if refused.code == SENDER_NOT_ALLOWED else INVALID_REQUEST
        self.refuse(422, error_code, refusal_message(refused, self.body))

    @property
    def valid(self) -> bool:
        return self.answer is None

    def recipients(self) -> list[str]:
        return [canonical_mailbox(bare_address(a)) for f in ("to", "cc", "bcc") for a in self.fields.get(f, [])]

    def check_inactive(self, suppressed: set[str]) -> None:
        """Postmark refuses a message whose recipients are all inactive (suppressed), and names the inactive
        ones of a message it takes."""
        recipients = self.recipients()
        self.inactive = sorted({address for address in recipients if address in suppressed})
        if self.inactive and len(self.inactive) == len(set(recipients)):
            self.refuse(422, INACTIVE_RECIPIENT, inactive_message(self.inactive, all_inactive=True))

    def accepted(self, email_id: Any, created_at: Any) -> None:
        message = inactive_message(self.inactive, all_inactive=False) if self.inactive else "OK"
        self.answer = {
            "To": self.to,
            "SubmittedAt": created_at.isoformat(),
            "MessageID": str(email_id),
            "ErrorCode": OK,
            "Message": message,
        }


def _check_inactive(api_key: ApiKey, messages: list[_Message]) -> None:
    valid = [message for message in messages if message.valid]
    addresses = {address for message in valid for address in message.recipients()}
    suppressed = selectors.suppressed_among(api_key=api_key, addresses=addresses) if addresses else set()
    for message in valid:
        message.check_inactive(suppressed)


# What the schema shows of a message: the door reads it with emails.postmark_message and validates it as
# every email is (emails.services.validating), so these serializers only document it.
@extend_schema_field({"type": "string", "enum": [*TRACK_LINKS], "nullable": True})
class _TrackLinksField(serializers.CharField):
    pass


@extend_schema_serializer(component_name="PostmarkHeader")
class PostmarkHeaderSerializer(RefusesUnknownFields, serializers.Serializer):
    """A custom header of a Postmark message."""

    Name = serializers.CharField(max_length=100, help_text="A header's name, as the API's `headers` takes it.")
    Value = serializers.CharField(max_length=998, allow_blank=True, help_text="Its value, one line.")


@extend_schema_serializer(component_name="PostmarkAttachment")
class PostmarkAttachmentSerializer(RefusesUnknownFields, serializers.Serializer):
    """A file of a Postmark message: attached, or inline with a ContentID."""

    Name = serializers.CharField(max_length=255, help_text="A file name, without a path.")
    Content = serializers.CharField(help_text="The file, base64-encoded.")
    ContentType = serializers.CharField(
        max_length=255, required=False, allow_null=True, help_text="A MIME type; guessed from the Name when absent."
    )
    ContentID = serializers.CharField(
        max_length=132,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="Makes it an inline part: `cid:logo.png` or `logo.png`, shown by the html as `cid:logo.png`.",
    )


ADDRESSES = "Comma-separated `Name <addr>` addresses; To, Cc and Bcc hold at most 50 together."
OPTIONAL_ADDRESSES = {
    "max_length": MAX_ADDRESS_LIST_LENGTH,
    "required": False,
    "allow_null": True,
    "allow_blank": True,  # as none, as Postmark takes it
    "help_text": ADDRESSES,
}


@extend_schema_serializer(component_name="PostmarkMessage")
class PostmarkMessageSerializer(RefusesUnknownFields, serializers.Serializer):
    """A message as Postmark's API takes it. A field given as null is as if absent; any other field is a 422."""

    From = serializers.CharField(max_length=MAX_ADDRESS_LENGTH, help_text="`addr` or `Name <addr>`.")
    To = serializers.CharField(max_length=MAX_ADDRESS_LIST_LENGTH, help_text=ADDRESSES)
    Cc = serializers.CharField(max_length=MAX_ADDRESS_LIST_LENGTH, required=False, allow_null=True, help_text=ADDRESSES)
    Bcc = serializers.CharField(
        max_length=MAX_ADDRESS_LIST_LENGTH, required=False, allow_null=True, help_text=ADDRESSES
    )
    ReplyTo = serializers.CharField(
        max_length=MAX_ADDRESS_LIST_LENGTH,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="Comma-separated addresses.",
    )
    Subject = serializers.CharField(max_length=998, required=False, allow_null=True, help_text="One line.")
    TextBody = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, help_text="The plain-text body; give it, HtmlBody or both."
    )
    HtmlBody = serializers.CharField(required=False, allow_null=True, allow_blank=True, help_text="The html body.")
    Headers = serializers.ListField(
        child=PostmarkHeaderSerializer(),
        max_length=MAX_HEADERS,
        required=False,
        allow_null=True,
        help_text="Custom headers, as the API's `headers` takes them.",
    )
    Attachments = serializers.ListField(
        child=PostmarkAttachmentSerializer(),
        max_length=MAX_ATTACHMENTS,
        required=False,
        allow_null=True,
        help_text="Files, attached or inline; their decoded size counts towards the email's 10 MB.",
    )
    Tag = serializers.CharField(
        max_length=MAX_TAG_LENGTH, required=False, allow_null=True, allow_blank=True, help_text="The email's one tag."
    )
    Metadata = MetadataField(required=False, allow_null=True, help_text="The email's metadata, as the API's.")
    MessageStream = serializers.CharField(
        max_length=MAX_TAG_LENGTH, required=False, allow_null=True, allow_blank=True, help_text="Kept as a tag is."
    )
    TrackOpens = serializers.BooleanField(
        required=False, allow_null=True, help_text="Open tracking, at the providers that offer it."
    )
    TrackLinks = _TrackLinksField(required=False, allow_null=True, help_text="`None` turns click tracking off.")


@extend_schema_serializer(component_name="PostmarkResult")
class PostmarkResultSerializer(serializers.Serializer):
    """A message taken."""

    To = serializers.CharField(help_text="The To of the message, as given.")
    SubmittedAt = serializers.DateTimeField()
    MessageID = serializers.UUIDField(help_text="The email's id: `GET /api/v1/emails/{id}` shows it.")
    ErrorCode = serializers.IntegerField(help_text="0.")
    Message = serializers.CharField(help_text="`OK`, or the inactive (suppressed) recipients left out.")


@extend_schema_serializer(component_name="PostmarkError")
class PostmarkErrorSerializer(serializers.Serializer):
    """A message, or a request, refused."""

    ErrorCode = serializers.IntegerField(help_text="Postmark's error code.")
    Message = serializers.CharField(help_text="Why, naming the field.")


def _errors(*statuses: int) -> dict[int, OpenApiResponse]:
    meanings = {
        401: "ErrorCode 10: no X-Postmark-Server-Token, or not a valid API key.",
        413: "The body, or the email with its attachments, is too large.",
        422: "ErrorCode 300: an invalid message (the Message names the field); 400: a From the key may not use; "
        "402: not JSON; 406: every recipient is inactive (suppressed); 409: not application/json; 410: over 500 "
        "messages.",
        429: "ErrorCode 429: over the API key's rate; Retry-After says when to try again.",
        503: "ErrorCode 100: unavailable for a moment; nothing was stored. Retry-After says when to try again.",
    }
    return {status: OpenApiResponse(PostmarkErrorSerializer, description=meanings[status]) for status in statuses}


class _PostmarkView(APIView):
    authentication_classes = [ServerTokenAuthentication]

    def get_exception_handler(self):
        return postmark_exception_handler


class PostmarkEmailApi(_PostmarkView):
    @extend_schema(
        operation_id="postmark_email",
        summary="Send an email, as Postmark's POST /email",
        description="Postmark's API, for its clients (anymail, postmarker, ...) pointed at this service: the "
        "email is stored and queued as `POST /api/v1/emails` would, and its `MessageID` is its id here.",
        request=PostmarkMessageSerializer,
        responses={
            200: OpenApiResponse(PostmarkResultSerializer, description="Taken: the email is stored and queued."),
            **_errors(401, 413, 422, 429, 503),
        },
        tags=["postmark"],
    )
    def post(self, request):
        message = _Message(request.data)
        if message.valid:
            _check_inactive(request.auth, [message])
        if message.valid:
            try:
                email = email_create(api_key=request.auth, **message.fields)
            except InvalidFields as exc:
                message.refuse_fields(exc)
            except TooLarge as exc:
                message.refuse(413, INVALID_REQUEST, exc.message)
            else:
                message.accepted(email.id, email.created_at)
        return Response(message.answer, status=message.status)


# Any item is taken: one that is not a valid message is refused in its own result, not the request.
BATCH = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_BATCH,
    "items": {"anyOf": [{"$ref": "#/components/schemas/PostmarkMessageRequest"}, {}]},
}
RESULT, ERROR = "#/components/schemas/PostmarkResult", "#/components/schemas/PostmarkError"
BATCH_RESULTS = {"type": "array", "items": {"anyOf": [{"$ref": RESULT}, {"$ref": ERROR}]}}


class PostmarkBatchApi(_PostmarkView):
    @extend_schema(
        operation_id="postmark_email_batch",
        summary="Send up to 500 emails, as Postmark's POST /email/batch",
        description="A JSON array of up to 500 messages as `POST /email` takes them; answers 200 with one result "
        "per message, in order: a refused message gets its `{ErrorCode, Message}` and the others are stored.",
        request={"application/json": BATCH},
        responses={
            200: OpenApiResponse(BATCH_RESULTS, description="One result per message, in order."),
            **_errors(401, 413, 422, 429, 503),
        },
        tags=["postmark"],
    )
    def post(self, request):
        data = request.data
        if not isinstance(data, list) or not data:
            raise PostmarkRefusal("A batch is a JSON array of 1 to 500 messages.")
        if len(data) > MAX_BATCH:
            raise PostmarkRefusal(
                f"Too many batch messages: {len(data)}; at most {MAX_BATCH} in one request.", TOO_MANY_BATCH_MESSAGES
            )
        messages = [_Message(item) for item in data]
        _check_inactive(request.auth, messages)
        valid = [message for message in messages if message.valid]
        outcomes = email_create_batch(api_key=request.auth, items=[message.fields for message in valid])
        for message, outcome in zip(valid, outcomes, strict=True):
            if "email" in outcome:
                message.accepted(outcome["email"]["id"], outcome["email"]["created_at"])
            elif isinstance(outcome["refused"], TooLarge):
                message.refuse(413, INVALID_REQUEST, outcome["refused"].message)
            else:
                message.refuse_fields(outcome["refused"])
        return Response([message.answer for message in messages], status=200)
