import pytest

pytestmark = pytest.mark.django_db


def test_a_key_over_its_rate_gets_429_with_retry_after(alice, bob, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "3/day"}}

    statuses = [alice.get("/api/v1/emails").status_code for _ in range(4)]
    throttled = alice.get("/api/v1/emails")

    assert statuses == [200, 200, 200, 429]
    assert 0 < int(throttled["Retry-After"]) <= 86400  # until the window ends
    assert bob.get("/api/v1/emails").status_code == 200  # each key has its own budget


def test_the_throttle_lets_requests_through_when_redis_is_down(alice, settings):
    from infra.redis import get_redis

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    get_redis.cache_clear()
    try:
        assert alice.get("/api/v1/emails").status_code == 200
    finally:
        get_redis.cache_clear()
