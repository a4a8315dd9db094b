"""A global rate limit per provider: GCRA in Redis, shared by every worker process on every host.

A sender reserves the next free slot and sleeps until it: one Redis call per email, no polling.
Times come from Redis's clock, so hosts with skewed clocks still agree.
"""

from __future__ import annotations

from mailservice.redis import get_redis

# KEYS[1]: the provider's theoretical arrival time (TAT), in microseconds.
# ARGV: interval (µs between sends), burst (sends allowed at once), max_wait (µs).
# Returns the µs to wait before sending; -1 (and no reservation) if that is over max_wait.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = (tonumber(ARGV[2]) - 1) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
if wait > tonumber(ARGV[3]) then return -1 end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return wait
"""

_script = None


def reserve(provider: str, *, rate: float, burst: int = 1, max_wait: float) -> float | None:
    """Reserves a send slot for `provider`: returns the seconds to wait before sending,
    or None when the next slot is further than `max_wait` away (then nothing is reserved)."""
    global _script
    if _script is None:
        _script = get_redis().register_script(_RESERVE)
    wait = _script(keys=[f"mailservice:rate:{provider}"], args=[1_000_000 / rate, burst, int(max_wait * 1_000_000)])
    return None if wait < 0 else wait / 1_000_000
