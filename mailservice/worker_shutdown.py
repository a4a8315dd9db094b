"""A worker's warm shutdown, as its send tasks see it.

On SIGTERM (what systemd, Kubernetes and honcho send) Celery's main process stops taking tasks and waits
for the running ones, but its prefork children, where the tasks run, get no signal of their own. So the
main process writes the time by which the worker must be gone into memory shared with its children
(made here, at import, before the pool forks them), and a send task reads it: no new send starts, what
was claimed and not started goes back to PENDING at once, and what is in flight is finished and recorded.

The deadline is kept whatever happens inside Celery: if the worker is still there when it comes (a pool that
never finishes joining its children), it writes every process's stacks to its log and exits, as a supervisor's
SIGKILL would a moment later. By then no send is running and every outcome that could be written was.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time

import billiard
from celery.signals import task_prerun, worker_process_init, worker_shutting_down
from django.conf import settings

log = logging.getLogger(__name__)

# Sends stop starting one second before the deadline (LEASE_MARGIN_SECONDS in emails.services.sending); the
# process is made to go half a second before it, so that it is gone within MAIL_SHUTDOWN_GRACE.
EXIT_AHEAD_SECONDS = 0.5

# time.monotonic() (one clock for every process of the machine) by which the worker must be gone; 0: running.
_deadline = multiprocessing.RawValue(ctypes.c_double, 0.0)


def shutdown_deadline() -> float | None:
    """When this worker must be gone (time.monotonic()), or None while it runs."""
    return _deadline.value or None


def _begin() -> None:
    if not _deadline.value:
        _deadline.value = time.monotonic() + settings.MAIL_SHUTDOWN_GRACE


_keeping_deadline: list[threading.Thread] = []


@worker_shutting_down.connect
def _on_worker_shutting_down(**kwargs) -> None:
    # In the main process, as Celery begins its shutdown (from its signal handler: nothing here may block).
    # A child signalled with it may have set the deadline already.
    _begin()
    if not _keeping_deadline:
        _keeping_deadline.append(threading.Thread(target=_exit_at_deadline, name="shutdown-deadline", daemon=True))
        _keeping_deadline[0].start()


def _exit_at_deadline() -> None:
    time.sleep(max(0.0, _deadline.value - EXIT_AHEAD_SECONDS - time.monotonic()))
    children = billiard.active_children()
    log.warning("worker still running at its shutdown deadline: exiting, with its %d pool process(es)", len(children))
    # Where it was stuck, into the worker's log (Celery replaces sys.stderr with a logger without a file).
    faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
    for child in children:
        _signal(child.pid, signal.SIGUSR2)  # each writes its stacks too (registered at _on_child_start)
    time.sleep(0.2)
    for child in children:
        _signal(child.pid, signal.SIGKILL)
    sys.__stderr__.flush()
    os._exit(1)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone meanwhile
        os.kill(pid, signum)


_in_pool_child = False
_previous_handler: list = [signal.SIG_DFL]  # billiard's, in a pool child


@worker_process_init.connect
def _on_child_start(**kwargs) -> None:
    global _in_pool_child
    _in_pool_child = True
    faulthandler.register(signal.SIGUSR2, file=sys.__stderr__, all_threads=True)  # see _exit_at_deadline


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
