import pytest

pytestmark = pytest.mark.django_db


def test_a_key_over_its_rate_gets_429_with_retry_after(alice, bob, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "3/minute"}}

    statuses = [alice.get("/api/v1/emails").status_code for _ in range(4)]
    throttled = alice.get("/api/v1/emails")

    assert statuses == [200, 200, 200, 429]
    assert 0 < int(throttled["Retry-After"]) <= 60
    assert bob.get("/api/v1/emails").status_code == 200  # each key has its own budget


def test_the_throttle_lets_requests_through_when_redis_is_down(alice, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0"}}  # fmt: skip

    assert alice.get("/api/v1/emails").status_code == 200
