"""A global rate limit per provider: GCRA in Redis, shared by every worker process on every host.

A sender reserves the next free slot and sleeps until it: one Redis call per email, no polling.
A slot further off than the caller will wait is still reserved, under the email's id (its
ticket), so the email can be handed back and sent at its slot without queueing again.
Times come from Redis's clock, so hosts with skewed clocks still agree.
"""

from __future__ import annotations

import logging

import redis

from infra.redis import get_redis

log = logging.getLogger(__name__)

# KEYS: the provider's theoretical arrival time (TAT, µs); the ticket's reserved slot.
# ARGV: interval (µs between sends), burst (sends allowed at once), max_wait (µs), provider.
# Returns the µs to wait before sending. Over max_wait, the slot is kept under the ticket, and
# the same ticket asking again for the same provider gets 0: its slot has come.
_RESERVE = """
if redis.call('GET', KEYS[2]) == ARGV[4] then
  redis.call('DEL', KEYS[2])
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = (tonumber(ARGV[2]) - 1) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
if wait > tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[4], 'PX', math.ceil(wait / 1000) + 600000)
end
return wait
"""

_script = None
# Slots are spaced 4 % wider than 1/rate: a message reaches the provider some ms after its slot, more
# on a busy host, and the limit must hold where the provider counts, not only where we reserve. At 2 %
# one send delayed by two slots (40 ms at 50/s) put one over the limit in a second.
SPACING = 1.04


def reserve(provider: str, *, rate: float, burst: int = 1, max_wait: float, ticket: str) -> float:
    """Reserves `provider`'s next send slot for `ticket`; returns the seconds until it.

    Over `max_wait`, the caller should hand the email back until then and ask again with the
    same ticket, which then gets 0. If Redis fails, the limit fails open (0): the email goes now.
    """
    global _script
    try:
        if _script is None:
            _script = get_redis().register_script(_RESERVE)
        keys = [f"mailservice:rate:{provider}", f"mailservice:rate-ticket:{ticket}"]
        wait = _script(keys=keys, args=[1_000_000 * SPACING / rate, burst, int(max_wait * 1_000_000), provider])
    except redis.RedisError as exc:
        log.warning("rate limit of %s not enforced: Redis error %s", provider, type(exc).__name__)
        return 0.0
    return wait / 1_000_000
