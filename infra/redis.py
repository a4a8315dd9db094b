"""The shared Redis client (broker host, and later rate limits and circuit breakers)."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings


@cache
def get_redis() -> redis.Redis:
    # Short timeouts: a Redis outage must fail fast, never hang a request or a sweep.
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
