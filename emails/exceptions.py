import logging

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.exceptions import APIException, ErrorDetail, NotAuthenticated, ValidationError
from rest_framework.views import exception_handler

from emails.authentication import ApiKeyAuthentication, missing_key_message
from emails.errors import IdempotencyConflict, InvalidFields, TooLarge
from emails.rendering import RenderUnavailable
from infra.encryption import UndecryptableError

log = logging.getLogger(__name__)

# What an unreachable, refusing or frozen database raises; each door answers it with a 503 (here for DRF's
# views, mailservice.urls.server_error for the rest).
DATABASE_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 5  # in a 503's Retry-After: a database outage, no render process


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


class IdempotencyKeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = IdempotencyConflict.message
    default_code = "idempotency_key_reused"


class DatabaseUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is unavailable; try again shortly."
    default_code = "database_unavailable"


class TemplatesUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Templates cannot be rendered right now; try again shortly."
    default_code = "templates_unavailable"


class ContentUndecryptable(APIException):
    """Stored content no key of MAIL_ENCRYPTION_KEYS opens: the service's configuration, not the request."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "undecryptable"


def log_unavailable(exc: BaseException) -> None:
    # The type only: a database error's message may quote the request's data.
    log.error("unavailable (%s): answered 503", type(exc).__name__)


def api_exception_handler(exc, context):
    """DRF's handler, plus: the accepting service's errors as the API answers them (a 400 naming each field,
    a 413, a 422), a request without an API key is told how to send one, a body over
    DATA_UPLOAD_MAX_MEMORY_SIZE is a 413, not Django's 400, content no key opens is a 500 naming
    MAIL_ENCRYPTION_KEYS, and a database outage, or no template render process to be had, is a 503 with
    Retry-After, not Django's 500 page."""
    request = context.get("request")
    if isinstance(exc, InvalidFields):
        exc = ValidationError(exc.errors)
    elif isinstance(exc, TooLarge):
        exc = PayloadTooLarge(exc.message)
    elif isinstance(exc, IdempotencyConflict):
        exc = IdempotencyKeyReused()
    elif isinstance(exc, NotAuthenticated) and request is not None and _takes_api_keys(request):
        exc.detail = ErrorDetail(missing_key_message(request), code=exc.default_code)
    elif isinstance(exc, RequestDataTooBig):
        from django.conf import settings

        exc = PayloadTooLarge(f"Request body too large: at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    elif isinstance(exc, UndecryptableError):
        log.error("stored content cannot be decrypted: %s", exc)  # says which variable, quotes no content
        exc = ContentUndecryptable(str(exc))
    elif isinstance(exc, (*DATABASE_ERRORS, RenderUnavailable)):
        log_unavailable(exc)
        unavailable = TemplatesUnavailable() if isinstance(exc, RenderUnavailable) else DatabaseUnavailable()
        response = exception_handler(unavailable, context)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return exception_handler(exc, context)


def _takes_api_keys(request) -> bool:
    """Whether the view answering `request` authenticates API keys (the dashboard's views take a session)."""
    return any(isinstance(authenticator, ApiKeyAuthentication) for authenticator in request.authenticators)
