"""A worker's warm shutdown, as its send tasks see it.

On SIGTERM (what systemd, Kubernetes and honcho send) Celery's main process stops taking tasks and waits
for the running ones, but its prefork children, where the tasks run, get no signal of their own. So the
main process writes the time by which the worker must be gone into memory shared with its children
(made here, at import, before the pool forks them), and a send task reads it: no new send starts, what
was claimed and not started goes back to PENDING at once, and what is in flight is finished and recorded.

A child signalled on its own (billiard's hard time limit, an operator's `kill`) stops the same way, but
alone: its deadline is its own, the other children go on sending, and it exits once its task is done.

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
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_shutting_down
from django.conf import settings

log = logging.getLogger(__name__)

# The process is made to go this long before its deadline: after its last send started (LEASE_MARGIN_SECONDS
# before it, in emails.services.sending) and within MAIL_SHUTDOWN_GRACE.
EXIT_AHEAD_SECONDS = 0.5

# time.monotonic() (one clock for every process of the machine) by which the worker must be gone; 0: running.
# Written by the main process only.
_worker_deadline = multiprocessing.RawValue(ctypes.c_double, 0.0)
# In a pool child signalled on its own: when it must be gone; 0: not signalled.
_child_deadline = 0.0


def shutdown_deadline() -> float | None:
    """When this process must be gone (time.monotonic()), or None while it runs."""
    deadlines = [d for d in (_worker_deadline.value, _child_deadline) if d]
    return min(deadlines) if deadlines else None


def _grace_ends() -> float:
    return time.monotonic() + settings.MAIL_SHUTDOWN_GRACE


_keeping_deadline: list[threading.Thread] = []


@worker_shutting_down.connect
def _on_worker_shutting_down(**kwargs) -> None:
    # In the main process, as Celery begins its shutdown (from its signal handler: nothing here may block).
    if _keeping_deadline:
        return  # a second signal: the deadline stands
    deadline = _worker_deadline.value = _grace_ends()
    # A backstop that needs neither the GIL nor a lock: at the deadline, stacks to the log and _exit(1).
    faulthandler.dump_traceback_later(deadline - time.monotonic(), exit=True, file=sys.__stderr__)
    _keeping_deadline.append(threading.Thread(target=_exit_at, args=(deadline,), name="shutdown-deadline"))
    _keeping_deadline[0].daemon = True
    _keeping_deadline[0].start()


def _exit_at(deadline: float) -> None:
    time.sleep(max(0.0, deadline - EXIT_AHEAD_SECONDS - time.monotonic()))
    # Signals first, logging last: a main thread stuck writing its log may hold the logging lock.
    children = billiard.active_children()
    for child in children:
        _signal(child.pid, signal.SIGUSR2)  # each writes its stacks (registered at _on_child_start)
    time.sleep(0.2)
    for child in children:
        _signal(child.pid, signal.SIGKILL)
    faulthandler.cancel_dump_traceback_later()
    # Where it was stuck, into the worker's log (Celery replaces sys.stderr with a logger without a file).
    faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
    log.warning("worker still running at its shutdown deadline: exited, with its %d pool process(es)", len(children))
    sys.__stderr__.flush()
    os._exit(1)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone meanwhile
        os.kill(pid, signum)


_in_pool_child = False
_previous_handler: list = [signal.SIG_DFL]  # Celery's, in a pool child


@worker_process_init.connect
def _on_child_start(**kwargs) -> None:
    global _in_pool_child
    _in_pool_child = True
    faulthandler.register(signal.SIGUSR2, file=sys.__stderr__, all_threads=True)  # see _exit_at


@task_prerun.connect
def _on_task_start(**kwargs) -> None:
    # A child gets SIGTERM when the whole process group is signalled (systemd, honcho): it means the same
    # warm shutdown, which the main process, signalled too, carries out. Celery resets a child's SIGTERM to
    # exit at once, with the sends in flight, after worker_process_init: so ours goes in before a task runs.
    if _in_pool_child and signal.getsignal(signal.SIGTERM) is not _on_child_sigterm:
        _previous_handler[0] = signal.signal(signal.SIGTERM, _on_child_sigterm)


def _on_child_sigterm(signum: int, frame: object) -> None:
    # Its own deadline, not the worker's: with the process group, the main process was signalled too and
    # sets the worker's; alone, only this child stops. (Signalling the main process from here made it hang
    # now and then in its own shutdown.)
    global _child_deadline
    _child_deadline = _child_deadline or _grace_ends()
    # A second SIGTERM (billiard's SIGKILL follows its own within 0.1 s) stops the child at once, as it would have.
    signal.signal(signal.SIGTERM, _previous_handler[0])


@task_postrun.connect
def _on_task_end(**kwargs) -> None:
    # A child signalled on its own would hand back every email it is given from now on: it goes, and the
    # pool starts another. Its task is done but not yet reported, so Celery requeues it; the claims of the
    # task run again find nothing to send twice.
    if _child_deadline and not _worker_deadline.value:
        os.kill(os.getpid(), signal.SIGTERM)  # Celery's handler again: the child exits at once
