"""The broker side: publish email ids to the workers, and read the queue's depth.

The broker is a wake-up signal, not the record: a publish that fails is logged by id and
left to the sweep, which finds the row PENDING in the database.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Iterable

from celery import current_app

from infra.redis import get_redis

SEND_TASK = "emails.tasks.send_emails"
# Ids per task: a batch of 500 is 5 publishes (each ~0.5-1.5 ms of Celery's CPU), still spread over several
# workers. A task's fixed costs (its claim, the suppressions read, Celery's round trip) and the wait for its last
# sends, when its lanes have no other email to take, are shared by that many emails.
CHUNK = 100
QUEUE = "celery"  # Celery's default queue, a Redis list of that name
# Seconds added to every countdown (see publish): more than the clocks of hosts kept by NTP disagree.
COUNTDOWN_MARGIN = 0.25
# A web process publishes at most once per interval (see _Publisher).
PUBLISH_INTERVAL = 0.05

log = logging.getLogger(__name__)


def publish(email_ids: Iterable[object], *, countdown: float = 0, per_task: int = CHUNK) -> int:
    """Enqueues send_emails for the ids, `per_task` at a time; returns how many were published. Never raises.

    A countdown runs on the hosts' clocks, while a row's due time is PostgreSQL's: a task that arrived a
    little early would find nothing to claim and leave the row to the sweep, so it arrives a little late."""
    ids = [str(i) for i in email_ids]
    eta_countdown = countdown + COUNTDOWN_MARGIN if countdown else None
    for start in range(0, len(ids), per_task):
        try:
            # The project's Celery app (mailservice/celery.py, loaded with the settings), named without
            # importing the top from an app.
            current_app.send_task(SEND_TASK, args=[ids[start : start + per_task]], countdown=eta_countdown)
        except Exception as exc:
            # Broker down: the rows are stored, and the sweep publishes them once it is back.
            log.warning(
                "publish failed (%s) for %d email(s), first %s; the sweep will enqueue them",
                type(exc).__name__,
                len(ids) - start,
                ids[start],
            )
            return start
    return len(ids)


class _Publisher:
    """This process's background publisher: publish_soon() hands it ids and returns at once.

    It publishes at most once per PUBLISH_INTERVAL: the first id after a quiet spell goes out at once,
    and under load the ids of many submits gather into one task. A publish costs Celery ~0.5-1.5 ms of
    CPU whatever its number of ids: at 100 submits/s per process, a publish each was a third of the
    process's CPU, and now an id waits at most 50 ms. An id still waiting here when the process dies is
    published by the sweep, as after any lost publish."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: list[str] = []
        self.wake = threading.Event()
        self.pid = 0  # the process whose thread this is: a forked child starts its own

    def add(self, email_ids: Iterable[object]) -> None:
        with self.lock:
            self.waiting.extend(str(i) for i in email_ids)
            if self.pid != os.getpid():
                self.pid = os.getpid()
                threading.Thread(target=self.run, name="publisher", daemon=True).start()
        self.wake.set()

    def run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            self.flush()
            time.sleep(PUBLISH_INTERVAL)  # ids arriving meanwhile gather for the next publish

    def flush(self) -> None:
        with self.lock:
            ids, self.waiting = self.waiting, []
        if ids:
            publish(ids)


_publisher = _Publisher()
atexit.register(_publisher.flush)  # a process that stops cleanly publishes what it holds


def publish_soon(email_ids: Iterable[object]) -> None:
    """Enqueues send_emails for the ids from a background thread (see _Publisher). Never raises."""
    _publisher.add(email_ids)


def queue_depth() -> int:
    """Messages waiting in the broker (not those already reserved by workers)."""
    return int(get_redis().llen(QUEUE))
