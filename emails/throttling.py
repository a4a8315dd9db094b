import logging

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

log = logging.getLogger(__name__)


class ApiKeyRateThrottle(SimpleRateThrottle):
    """MAIL_API_THROTTLE per API key, counted in the shared Redis cache (all web processes)."""

    scope = "api_key"

    def get_rate(self):
        # Read when the throttle is built (DRF binds its class attribute at import): settings can change.
        return api_settings.DEFAULT_THROTTLE_RATES[self.scope]

    def get_cache_key(self, request, view):
        if request.auth is None:
            return None  # unauthenticated requests are refused before they cost anything
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except Exception as exc:
            # Redis down must not refuse mail the database can still accept: fail open.
            log.warning("throttle not applied: cache error %s", type(exc).__name__)
            return True
