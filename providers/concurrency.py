"""How many sends a worker process keeps in flight: enough to keep its core busy while sends wait on a provider,
and no more than the providers' rate limits can take.

A send takes `wall` seconds, `cpu` of them on this process's core (building the message, speaking the protocol);
the rest it waits on the network. wall / cpu sends in flight keep one core busy (Little's law); more only queue
for the GIL and hold connections. The wall time used is among the least of the recent sends' (their tenth
percentile): under load, sends also wait for the GIL and for each other, and counting that wait would ask for
yet more sends in flight. Providers with rate limits take no more than rate * wall sends at once, from every
worker together, and no more than the floor from one process (sized()).

MAIL_SEND_THREADS is the ceiling (each send thread keeps its own connection to each provider). FLOOR sends may be
in flight whatever the figures (unless every provider's rate limit says fewer), and are until the first sends are
measured: with fewer, delivery to a provider that answers at once ran slower (bench row 1)."""

from __future__ import annotations

import logging
import math
import threading
from collections import deque

log = logging.getLogger(__name__)

FLOOR = 8
# The recent sends the figures are taken from, and how often they are taken.
WINDOW = 200
EVERY = 20


def sized(wall: float, cpu: float, rates: list[float | None], *, floor: int, ceiling: int) -> int:
    """Sends to keep in flight, for sends taking `wall` seconds (`cpu` of them on this process's core) through
    providers with these rate limits (emails/s; None: unlimited)."""
    wanted = max(floor, math.ceil(wall / max(cpu, 1e-6)))
    if rates and all(rates):
        # Every provider limited: they take no more than rate * wall at once. A process sends to a rate-limited
        # provider one at a time (providers.failover), and a send's wall time then includes its wait for that
        # turn, which grows with the sends in flight: no more than the floor, lest that wait feed itself.
        wanted = min(floor, math.ceil(sum(rates) * wall) + 1)
    return max(1, min(wanted, ceiling))


class SendConcurrency:
    """This process's sends in flight, sized from the recent sends' times (record())."""

    def __init__(self, ceiling: int, providers: object, rates: list[float | None]) -> None:
        self.ceiling = ceiling
        self.providers = providers  # the MAIL_PROVIDERS setting it was sized for
        self.rates = rates
        self._samples: deque[tuple[float, float]] = deque(maxlen=WINDOW)
        self._lock = threading.Lock()
        self._recorded = 0
        self._limit = min(FLOOR, ceiling)

    def limit(self) -> int:
        return self._limit

    def record(self, wall: float, cpu: float) -> None:
        """One send's wall-clock and CPU seconds (in its own thread)."""
        with self._lock:
            self._samples.append((wall, cpu))
            self._recorded += 1
            if self._recorded % EVERY:
                return
            walls = sorted(wall for wall, _ in self._samples)
            least_wall = walls[len(walls) // 10]
            mean_cpu = sum(cpu for _, cpu in self._samples) / len(self._samples)
        limit = sized(least_wall, mean_cpu, self.rates, floor=FLOOR, ceiling=self.ceiling)
        if limit != self._limit:
            log.info("sends in flight: %d (a send takes %.1f ms, %.2f ms of it CPU)", limit, least_wall * 1000,
                     mean_cpu * 1000)  # fmt: skip
        self._limit = limit
