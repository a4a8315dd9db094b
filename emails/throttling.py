import functools
import logging
import time

import redis
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from infra.redis import get_redis

log = logging.getLogger(__name__)


# The window's counter, made to expire with its window when it is created: one call, atomic.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


@functools.cache
def _count_script(client: redis.Redis):
    return client.register_script(_COUNT)


class ApiKeyRateThrottle(BaseThrottle):
    """MAIL_API_THROTTLE per API key: a fixed-window counter in Redis, shared by all web processes.

    One atomic script call per request (DRF's SimpleRateThrottle reads and rewrites a list of every
    request's time through the cache: two round trips, racy, and heavier the higher the rate)."""

    scope = "api_key"

    def allow_request(self, request, view) -> bool:
        if request.auth is None:
            return True  # unauthenticated requests are refused before they cost anything
        limit, period = SimpleRateThrottle.parse_rate(self, api_settings.DEFAULT_THROTTLE_RATES[self.scope])
        now = time.time()
        window = int(now // period)
        self.retry_after = (window + 1) * period - now
        key = f"mailservice:throttle:{request.auth.pk}:{period}:{window}"
        try:
            count = _count_script(get_redis())(keys=[key], args=[period + 1])
        except redis.RedisError as exc:
            # Redis down must not refuse mail the database can still accept: fail open.
            log.warning("throttle not applied: Redis error %s", type(exc).__name__)
            return True
        return count <= limit

    def wait(self) -> float:
        return self.retry_after
