"""A worker process keeps as many sends in flight as its providers' latency needs (providers.concurrency): a slow
provider gets many at once, a fast one the floor, a rate-limited one no more than its rate can take, and never
more than MAIL_SEND_THREADS."""

import pytest

from emails.models import Email
from emails.services import emails_send
from providers.concurrency import FLOOR, sized
from tests.conftest import make_emails


def test_a_provider_that_answers_slowly_gets_more_sends_at_once_than_one_that_answers_at_once():
    # 20 ms at the provider, 0.4 ms of this process's CPU per send: 50 in flight keep the core busy.
    assert sized(0.020, 0.0004, [None], floor=FLOOR, ceiling=64) == 50
    assert sized(0.0006, 0.0004, [None], floor=FLOOR, ceiling=64) == FLOOR
    assert sized(0.020, 0.0004, [None], floor=FLOOR, ceiling=32) == 32


def test_rate_limits_bound_the_sends_in_flight_only_when_every_provider_has_one():
    # 50 emails/s at 20 ms each: 1 at a time carries it, with one more waiting for its slot.
    assert sized(0.020, 0.0004, [50.0], floor=FLOOR, ceiling=64) == 2
    assert sized(0.020, 0.0004, [50.0, 100.0], floor=FLOOR, ceiling=64) == 4
    # A process sends to each rate-limited provider one at a time: more than the floor would only wait its turn.
    assert sized(0.020, 0.0004, [500.0, 450.0], floor=FLOOR, ceiling=64) == FLOOR
    # A provider without a limit can take what the latency asks for.
    assert sized(0.020, 0.0004, [50.0, None], floor=FLOOR, ceiling=64) == 50


@pytest.mark.django_db
def test_a_slow_provider_gets_many_sends_in_flight_and_never_more_than_the_threads(settings, sending_to_sink):
    settings.MAIL_SEND_THREADS = 32
    sending_to_sink.set_latency(0.05)
    ids = make_emails(200)

    emails_send(ids)

    assert Email.objects.filter(id__in=ids, status=Email.Status.SENT).count() == len(ids)
    at_once = sending_to_sink.most_at_once
    assert 2 * FLOOR <= at_once <= settings.MAIL_SEND_THREADS, at_once
    assert sending_to_sink.connections <= settings.MAIL_SEND_THREADS
