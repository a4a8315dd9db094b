"""Every provider in MAIL_PROVIDERS is used: lower priority first, equal priorities shared by weight."""

import pytest

from emails.models import Email
from emails.services import email_send
from tests.conftest import make_emails
from tests.sink import SmtpSink

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_sinks():
    sinks = SmtpSink().start(), SmtpSink().start()
    yield sinks
    for sink in sinks:
        sink.stop()


def test_equal_priorities_share_traffic_by_weight(settings, two_sinks):
    big, small = two_sinks
    settings.MAIL_PROVIDERS = [{**big.provider("big"), "weight": 3}, {**small.provider("small"), "weight": 1}]

    for email_id in make_emails(1000):
        email_send(email_id)

    assert Email.objects.filter(status=Email.Status.SENT).count() == 1000
    share = len(big.received) / 1000
    assert 0.70 <= share <= 0.80, f"big got {share:.1%}"
    assert len(big.received) + len(small.received) == 1000
    assert Email.objects.filter(provider="big").count() == len(big.received)


def test_a_lower_priority_takes_all_the_traffic(settings, two_sinks):
    primary, backup = two_sinks
    settings.MAIL_PROVIDERS = [
        {**backup.provider("backup"), "priority": 2},
        {**primary.provider("primary"), "priority": 1},
    ]

    for email_id in make_emails(20):
        email_send(email_id)

    assert (len(primary.received), len(backup.received)) == (20, 0)
