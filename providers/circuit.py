"""A circuit breaker per provider, shared in Redis by every worker.

Closed: sends go through; consecutive transient failures are counted. At the threshold it opens:
the provider is skipped for the cool-down. Then one send at a time is let through as a probe:
success closes the breaker, failure opens it for another cool-down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from django.conf import settings

from infra.redis import get_redis

# KEYS: the breaker's hash, the probe's lock. ARGV[1]: how long a probe may take (ms).
# Returns {allowed (0/1), consecutive failures, is probe (0/1)}.
_ALLOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'failures', 'open_until')
local failures = tonumber(state[1] or 0)
local open_until = tonumber(state[2] or 0)
if open_until == 0 then return {1, failures, 0} end
if now < open_until then return {0, failures, 0} end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return {1, failures, 1} end
return {0, failures, 0}
"""

# ARGV: threshold, cool-down (µs). Returns 1 if the breaker is (now) open.
_FAILURE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or 0)
if open_until > 0 or failures >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'open_until', string.format('%.0f', now + tonumber(ARGV[2])))
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""

_scripts: dict[str, object] = {}
log = logging.getLogger(__name__)


def _run(name: str, source: str, provider: str, args: list) -> list | int:
    if name not in _scripts:
        _scripts[name] = get_redis().register_script(source)
    return _scripts[name](keys=_keys(provider), args=args)


# If Redis fails, breakers fail open: better to try a provider than to stop all mail, and an
# error here must never abort a send whose outcome still has to be recorded.


def _keys(provider: str) -> list[str]:
    return [f"mailservice:circuit:{provider}", f"mailservice:circuit:{provider}:probe"]


@dataclass(frozen=True)
class Permit:
    allowed: bool
    probe: bool  # the one send that decides whether the breaker closes
    failures: int


def allow(provider: str) -> Permit:
    try:
        allowed, failures, probe = _run("allow", _ALLOW, provider, [int(settings.MAIL_CIRCUIT_PROBE_SECONDS * 1000)])
    except redis.RedisError as exc:
        log.warning("circuit of %s unknown: Redis error %s", provider, type(exc).__name__)
        return Permit(allowed=True, probe=False, failures=0)
    return Permit(allowed=bool(allowed), probe=bool(probe), failures=int(failures))


def record_success(provider: str, permit: Permit) -> None:
    if permit.probe or permit.failures:  # a closed breaker with no failures has nothing to reset
        try:
            get_redis().delete(*_keys(provider))
        except redis.RedisError as exc:
            log.warning("circuit of %s not reset: Redis error %s", provider, type(exc).__name__)


def record_failure(provider: str) -> bool:
    """Counts a transient failure; returns True if the breaker is open now."""
    args = [settings.MAIL_CIRCUIT_THRESHOLD, int(settings.MAIL_CIRCUIT_COOLDOWN * 1_000_000)]
    try:
        return bool(_run("failure", _FAILURE, provider, args))
    except redis.RedisError as exc:
        log.warning("circuit of %s not updated: Redis error %s", provider, type(exc).__name__)
        return False


def state(provider: str) -> dict:
    """The breaker as the dashboard and /metrics show it: state, failures, open_until (unix seconds)."""
    failures, open_until = get_redis().hmget(_keys(provider)[0], "failures", "open_until")
    open_until_s = int(open_until) / 1_000_000 if open_until else None
    if open_until_s is None:
        name = "closed"
    else:
        seconds, micros = get_redis().time()
        name = "open" if seconds + micros / 1_000_000 < open_until_s else "half-open"
    return {"state": name, "failures": int(failures or 0), "open_until": open_until_s}
