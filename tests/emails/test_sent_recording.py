"""Recording what was sent never fails for the whole chunk because of one email."""

import pytest

from emails.models import Email
from emails.services import emails_send
from tests.conftest import make_emails

pytestmark = pytest.mark.django_db


def test_an_over_long_provider_message_id_is_cut_and_the_chunk_recorded(settings):
    settings.MAIL_PROVIDERS = [{"name": "esp", "backend": "tests.backends.PerRecipientIdsBackend"}]
    many = [f"user{n}@example.org" for n in range(20)]  # 20 ids of ~110 characters: over 1,000 joined
    ids = make_emails(1, to=many) + make_emails(2)

    emails_send(ids)

    emails = Email.objects.filter(id__in=ids)
    assert {e.status for e in emails} == {"SENT"}
    long_one = emails.get(id=ids[0])
    assert len(long_one.provider_message_id) == 1000
    assert long_one.provider_message_id.startswith("user0@example.org-")
