import re
import time

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from emails.models import ApiKey

# Valid keys, by hash, each until it must be looked up again: a query fewer per request, at the price of
# a revoked key still working for up to this long in a process that has just seen it.
KNOWN_KEY_SECONDS = 10.0
BEARER_USAGE = "`Authorization: Bearer <key>`"
INVALID_KEY = "Invalid API key: unknown, or revoked."
_known_keys: dict[str, tuple[ApiKey, float]] = {}


def valid_api_key(key: str) -> ApiKey | None:
    key_hash = ApiKey.hash(key)
    known = _known_keys.get(key_hash)
    now = time.time()
    if known is not None and known[1] > now:
        return known[0]
    api_key = ApiKey.objects.filter(key_hash=key_hash, revoked_at__isnull=True).first()
    if api_key is None:
        _known_keys.pop(key_hash, None)
    else:
        if len(_known_keys) >= 10_000:  # bounded, whatever the number of keys
            _known_keys.clear()
        _known_keys[key_hash] = (api_key, now + KNOWN_KEY_SECONDS)
    return api_key


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Bearer <key>`; the request's user and auth are the ApiKey."""

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                f"Malformed Authorization header: send the API key as {BEARER_USAGE}."
            )
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(INVALID_KEY) from None
        api_key = valid_api_key(key)
        if api_key is None:
            raise exceptions.AuthenticationFailed(INVALID_KEY)
        return api_key, api_key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'  # makes DRF answer 401, not 403


# A scheme's name as an answer may quote it: a key (ms_...) is never one, having an underscore.
_SCHEME_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,19}")


def missing_key_message(request) -> str:
    """What a 401 for a request that sent no Bearer key says: which scheme to use, and what came instead
    (a scheme's name only, never a credential)."""
    words = get_authorization_header(request).split()
    if not words:
        return f"No API key: send it as {BEARER_USAGE}."
    if len(words) == 1:
        return f"The Authorization header has no scheme: send the API key as {BEARER_USAGE}."
    try:
        scheme = words[0].decode("ascii")
    except UnicodeDecodeError:
        scheme = ""
    shown = f"the {scheme!r} scheme" if _SCHEME_NAME.fullmatch(scheme) else "another scheme"
    return f"The Authorization header uses {shown}: send the API key as {BEARER_USAGE}."


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Tells drf-spectacular that the API takes a bearer key."""

    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        description = (
            "An API key, sent as `Authorization: Bearer <key>`. Made in the admin (API keys, Add) or with "
            "`manage.py create_api_key NAME`, and shown once: only its hash is stored."
        )
        return {"type": "http", "scheme": "bearer", "description": description}
