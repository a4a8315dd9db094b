import pytest

from emails.models import Email
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db


def test_resend_creates_a_new_email_with_the_same_content(alice):
    original = alice.post("/api/v1/emails", email_payload(tags=["order"]), format="json").json()

    response = alice.post(f"/api/v1/emails/{original['id']}/resend")

    assert response.status_code == 202
    copy = response.json()
    assert copy["id"] != original["id"]
    assert copy["resent_from"] == original["id"]
    assert response["Location"] == f"/api/v1/emails/{copy['id']}"
    assert (copy["status"], copy["subject"], copy["to"], copy["tags"]) == (
        "PENDING",
        original["subject"],
        original["to"],
        ["order"],
    )


def test_resend_of_another_keys_email_is_a_404(alice, bob):
    original = alice.post("/api/v1/emails", email_payload(), format="json").json()["id"]

    assert bob.post(f"/api/v1/emails/{original}/resend").status_code == 404
    assert Email.objects.count() == 1


def test_stats_count_the_keys_emails_by_status(alice, bob):
    ids = [alice.post("/api/v1/emails", email_payload(), format="json").json()["id"] for _ in range(3)]
    bob.post("/api/v1/emails", email_payload(), format="json")
    Email.objects.filter(id=ids[0]).update(status="FAILED")

    stats = alice.get("/api/v1/stats").json()

    assert stats["counts"] == {"PENDING": 2, "PROCESSING": 0, "SENT": 0, "FAILED": 1}
    assert stats["oldest_pending_age_seconds"] >= 0
    assert stats["failed_last_hour"] == 1
