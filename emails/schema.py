"""OpenAPI descriptions shared by the APIs: the errors they answer with, and examples."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

DETAIL = OpenApiResponse(OpenApiTypes.OBJECT, description='`{"detail": "..."}`')
FIELD_ERRORS = OpenApiResponse(
    OpenApiTypes.OBJECT, description='Each bad field with its messages: `{"to": ["..."], "subject": ["..."]}`.'
)
ERRORS = {
    400: FIELD_ERRORS,
    401: OpenApiResponse(OpenApiTypes.OBJECT, description="No key, or not a valid one."),
    429: OpenApiResponse(OpenApiTypes.OBJECT, description="Over the key's rate; see `Retry-After`."),
}
WRITE_ERRORS = {
    **ERRORS,
    413: OpenApiResponse(OpenApiTypes.OBJECT, description="Over 10 MB per email (or the request's size limit)."),
    415: OpenApiResponse(OpenApiTypes.OBJECT, description="The body is not JSON."),
    422: OpenApiResponse(OpenApiTypes.OBJECT, description="This Idempotency-Key came with a different request."),
}
NOT_FOUND = {404: OpenApiResponse(OpenApiTypes.OBJECT, description="No such email, or another key's.")}

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Up to 255 characters. A repeat with the same key and body gets the first response "
    "(the same email); the same key with another body is a 422. Kept at least 24 hours, per API key.",
)

EMAIL_EXAMPLE = OpenApiExample(
    "An order confirmation",
    request_only=True,
    value={
        "from": "Shop <shop@example.com>",
        "to": ["alice@example.org"],
        "subject": "Your order #1234",
        "text": "Thank you for your order.",
        "html": "<p>Thank you for your order.</p>",
        "tags": ["order"],
        "metadata": {"order_id": "1234"},
    },
)
TEMPLATE_EXAMPLE = OpenApiExample(
    "From a stored template",
    request_only=True,
    value={"from": "shop@example.com", "to": "alice@example.org", "template": "welcome", "context": {"name": "Alice"}},
)
