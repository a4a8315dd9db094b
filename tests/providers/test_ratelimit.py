"""A provider's rate limit holds across worker processes: measured where it counts, at the SMTP server."""

import bisect

import pytest

from emails.models import Email
from tests.conftest import make_emails
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RATE, BURST, EMAILS = 50, 5, 500


def busiest_second(times: list[float]) -> int:
    """The most arrivals in any window [t, t + 1 s)."""
    times = sorted(times)
    return max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))


def test_three_workers_stay_within_the_rate_limit(settings, sink, services):
    settings.MAIL_PROVIDERS = [{**sink.provider(), "rate_limit": RATE, "burst": BURST}]
    make_emails(EMAILS)
    for _ in range(3):
        services.worker(concurrency=1)

    wait_for(lambda: Email.objects.filter(status="SENT").count() == EMAILS, timeout=120, what="every email SENT")

    times = [r.at for r in sink.received]
    assert len(times) == EMAILS
    peak = busiest_second(times)
    duration = max(times) - min(times)
    print(f"busiest second: {peak} emails; {EMAILS} emails in {duration:.2f}s")
    assert peak <= RATE + BURST
    # The burst goes at once, the rest one slot each; 50 ms for the first message's connection set-up.
    assert duration >= (EMAILS - BURST) / RATE - 0.05
