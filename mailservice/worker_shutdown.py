"""A worker's warm shutdown, as its send tasks see it.

On SIGTERM (what systemd, Kubernetes and honcho send) Celery's main process stops taking tasks and waits
for the running ones, but its prefork children, where the tasks run, get no signal of their own. So the
main process writes the time by which the worker must be gone into memory shared with its children
(made here, at import, before the pool forks them), and a send task reads it: no new send starts, what
was claimed and not started goes back to PENDING at once, and what is in flight is finished and recorded.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import time

from celery.signals import task_prerun, worker_process_init, worker_shutting_down
from django.conf import settings

# time.monotonic() (one clock for every process of the machine) by which the worker must be gone; 0: running.
_deadline = multiprocessing.RawValue(ctypes.c_double, 0.0)


def shutdown_deadline() -> float | None:
    """When this worker must be gone (time.monotonic()), or None while it runs."""
    return _deadline.value or None


def _begin() -> None:
    if not _deadline.value:
        _deadline.value = time.monotonic() + settings.MAIL_SHUTDOWN_GRACE


@worker_shutting_down.connect
def _on_worker_shutting_down(**kwargs) -> None:
    _begin()  # in the main process, as Celery begins its shutdown


_in_pool_child = False
_previous_handler: list = [signal.SIG_DFL]  # billiard's, in a pool child


@worker_process_init.connect
def _on_child_start(**kwargs) -> None:
    global _in_pool_child
    _in_pool_child = True


@task_prerun.connect
def _on_task_start(**kwargs) -> None:
    # A child gets SIGTERM when the whole process group is signalled (systemd, honcho): it means the same
    # warm shutdown, which the main process, signalled too, carries out. billiard gives a child a handler
    # that exits at once, with the sends in flight, and sets it after worker_process_init: so ours goes in
    # before a task runs.
    if _in_pool_child and signal.getsignal(signal.SIGTERM) is not _on_child_sigterm:
        _previous_handler[0] = signal.signal(signal.SIGTERM, _on_child_sigterm)


def _on_child_sigterm(signum: int, frame: object) -> None:
    # The main process, signalled with it, carries out the warm shutdown; a child signalled alone only hands
    # back what it is given from then on (nothing is lost), so an operator should stop a worker as a whole.
    # (Signalling the main process from here made it hang now and then in its own shutdown.)
    _begin()
    # A second SIGTERM (billiard ending a cold shutdown) stops the child at once, as it would have.
    signal.signal(signal.SIGTERM, _previous_handler[0])
