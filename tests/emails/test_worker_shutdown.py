"""A deploy: SIGTERM to a worker finishes and records its sends in flight, hands what it claimed but had not
started back to PENDING at once, and exits within MAIL_SHUTDOWN_GRACE; a rolling restart sends each once."""

import os
import signal
import subprocess
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db.models.functions import Now
from django.utils import timezone

from emails import queue
from emails.models import Email
from mailservice.celery import app
from tests.conftest import make_emails
from tests.processes import BIN, Process, wait_for
from tests.stuck_task import STARTED

pytestmark = pytest.mark.django_db(transaction=True)


def _exit_within(worker, seconds: float) -> float:
    """Waits for the worker to exit; returns how long it took."""
    stopping = time.monotonic()
    wait_for(worker.exited, timeout=seconds, what="the worker to exit", interval=0.01)
    return time.monotonic() - stopping


@pytest.mark.parametrize("whole_group", [False, True], ids=["main-process", "process-group"])
def test_a_stopping_worker_records_its_sends_in_flight_and_hands_back_the_rest_at_once(
    sending_to_sink, services, whole_group
):
    sink = sending_to_sink
    sink.set_latency(0.5)
    later = timezone.now() + timedelta(days=1)
    ids = make_emails(40, send_at=later)  # stored not yet due: nothing published before the one chunk below
    Email.objects.filter(id__in=ids).update(next_attempt_at=Now(), send_at=None)
    # A lease far longer than the test: only the hand-back can bring the emails back.
    env = {"MAIL_LEASE_SECONDS": "300", "MAIL_SEND_THREADS": "2"}
    worker = services.worker(concurrency=1, **env)
    queue.publish(ids)
    wait_for(lambda: Email.objects.filter(status=Email.Status.PROCESSING).count() == 40, timeout=30, what="a claim")
    wait_for(lambda: sink.received, timeout=30, what="the first sends")

    if whole_group:
        worker.signal_group(signal.SIGTERM)  # as systemd and honcho do: every process of the worker
    else:
        worker.terminate()  # as Kubernetes does: the main process only, its pool's children get no signal
    took = _exit_within(worker, settings.MAIL_SHUTDOWN_GRACE + 5)
    assert took < settings.MAIL_SHUTDOWN_GRACE

    assert not Email.objects.filter(status=Email.Status.PROCESSING).exists(), "nothing left claimed"
    sent = set(Email.objects.filter(status=Email.Status.SENT).values_list("id", flat=True))
    assert {str(i) for i in sent} == set(sink.count_by_id()), "every send that went out is recorded"
    handed_back = Email.objects.filter(status=Email.Status.PENDING)
    assert handed_back.count() == 40 - len(sent) > 0
    assert set(handed_back.values_list("attempts", "leases_lost")) == {(0, 0)}, "nothing was tried or lost"

    services.worker(**env)  # the replacement: no lease to wait out
    wait_for(lambda: Email.objects.filter(status=Email.Status.SENT).count() == 40, timeout=60, what="all SENT")
    assert set(sink.count_by_id().values()) == {1}
    print(f"exit {took:.2f}s after SIGTERM; {len(sent)} sent before it, {40 - len(sent)} handed back")


def test_a_stopping_worker_hands_back_what_it_has_not_started_even_while_every_send_outlasts_the_grace(
    sending_to_sink, services
):
    sink = sending_to_sink
    sink.set_latency(60)  # both sends in flight outlast the worker's grace
    later = timezone.now() + timedelta(days=1)
    ids = make_emails(40, send_at=later)
    Email.objects.filter(id__in=ids).update(next_attempt_at=Now(), send_at=None)
    grace = 3
    env = {"MAIL_LEASE_SECONDS": "300", "MAIL_SEND_THREADS": "2", "MAIL_SHUTDOWN_GRACE": str(grace)}
    worker = services.worker(concurrency=1, **env)
    queue.publish(ids)
    wait_for(lambda: sink.most_at_once == 2, timeout=30, what="two sends in flight")

    worker.terminate()
    assert _exit_within(worker, grace + 5) < grace + 1

    # No send thread came free before the deadline: the worker's own thread handed the rest back.
    assert Email.objects.filter(status=Email.Status.PENDING, attempts=0).count() == 38
    # The two stuck sends' emails stay claimed: their lease takes them back, as after a crash.
    assert Email.objects.filter(status=Email.Status.PROCESSING).count() == 2
    assert not sink.received


def test_a_rolling_restart_under_load_delivers_each_email_exactly_once(sending_to_sink, services):
    sink = sending_to_sink
    sink.set_latency(0.04)
    ids = make_emails(1000)
    # 4 sends at once per process, not what 40 ms would be given: slow enough that each restart lands mid-run.
    paced = {"MAIL_SEND_THREADS": "4"}
    workers = [services.worker(**paced), services.worker(**paced)]
    exits = []
    for n, (worker, whole_group) in enumerate(zip(workers, [False, True], strict=True)):
        wait_for(lambda n=n: len(sink.received) >= 200 * (n + 1), timeout=120, what="delivery to be under way")
        if whole_group:
            worker.signal_group(signal.SIGTERM)  # as systemd and honcho do: every process of the worker
        else:
            worker.terminate()  # as Kubernetes does: the main process only
        assert len(sink.received) < 1000, "each restart lands mid-run"
        services.worker(**paced)  # its replacement, at once
        exits.append(_exit_within(worker, settings.MAIL_SHUTDOWN_GRACE + 5))

    wait_for(lambda: Email.objects.filter(status=Email.Status.SENT).count() == 1000, timeout=120, what="all SENT")
    counts = sink.count_by_id()
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}, f"{sum(counts.values()) - len(counts)} duplicates"
    assert max(exits) < settings.MAIL_SHUTDOWN_GRACE
    print("exits after SIGTERM: " + ", ".join(f"{t:.2f}s" for t in exits))


def test_a_worker_stuck_past_its_deadline_still_exits_in_time_and_logs_where_it_was_stuck(services, tmp_path):
    grace = 3
    args = [str(BIN / "celery"), "-A", "mailservice", "worker", "--loglevel", "INFO", "--concurrency", "1",
            "--include", "tests.stuck_task", "--without-gossip", "--without-mingle"]  # fmt: skip
    worker = Process("worker", args, services._env({"MAIL_SHUTDOWN_GRACE": str(grace)}), tmp_path)
    services._track(worker)
    app.send_task("tests.stuck")
    wait_for(lambda: STARTED in worker.log(), timeout=30, what="the stuck task to start")

    worker.terminate()
    took = _exit_within(worker, grace + 5)
    assert took < grace
    log = worker.log()
    assert "worker still running at its shutdown deadline" in log
    assert 'tests/stuck_task.py", line' in log, "the pool process's stack shows where it was stuck"
    print(f"exit {took:.2f}s after SIGTERM, MAIL_SHUTDOWN_GRACE={grace}")


def _pool_processes(worker) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(worker.popen.pid)], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def test_a_pool_process_signalled_alone_stops_alone_and_the_worker_goes_on_sending(sending_to_sink, services):
    # billiard's hard time limit signals one child, as an operator's `kill <pid>` does.
    sink = sending_to_sink
    sink.set_latency(0.05)
    first = make_emails(100)
    worker = services.worker(concurrency=2)
    wait_for(lambda: len(sink.received) >= 10, timeout=60, what="delivery to be under way")
    signalled = _pool_processes(worker)[0]
    os.kill(signalled, signal.SIGTERM)

    wait_for(lambda: signalled not in _pool_processes(worker), timeout=30, what="the signalled child to exit")
    later = make_emails(20)
    wait_for(
        lambda: Email.objects.filter(status=Email.Status.SENT).count() == 120, timeout=60, what="all SENT, later too"
    )
    assert not worker.exited(), "the worker runs on"
    counts = sink.count_by_id()
    assert set(counts) == set(first + later)
    assert set(counts.values()) == {1}
