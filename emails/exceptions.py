from django.core.exceptions import RequestDataTooBig
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.views import exception_handler


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


class IdempotencyKeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was used with a different request."
    default_code = "idempotency_key_reused"


def api_exception_handler(exc, context):
    """DRF's handler, plus: a body over DATA_UPLOAD_MAX_MEMORY_SIZE is a 413, not Django's 400."""
    if isinstance(exc, RequestDataTooBig):
        from django.conf import settings

        exc = PayloadTooLarge(f"Request body too large: at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    return exception_handler(exc, context)
