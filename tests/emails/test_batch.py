"""POST /api/v1/emails/batch: up to 500 at once, a constant number of queries, one result per item."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from emails.models import Email
from tests.conftest import email_payload
from tests.processes import wait_for


def _batch(client, emails: list[dict]):
    return client.post("/api/v1/emails/batch", {"emails": emails}, format="json")


def _queries(client, size: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert _batch(client, [email_payload(to=[f"user{n}@example.org"]) for n in range(size)]).status_code == 202
    return len(queries)


@pytest.mark.django_db
def test_the_query_count_does_not_grow_with_the_batch(alice):
    _queries(alice, 1)  # the first request of a key also looks the key up
    assert _queries(alice, 5) == _queries(alice, 500)
    assert Email.objects.count() == 506


@pytest.mark.django_db
def test_each_item_gets_its_result_in_order_and_valid_items_are_stored(alice):
    response = _batch(
        alice, [email_payload(), email_payload(to=["bad@"]), email_payload(template="nope"), email_payload()]
    )

    assert response.status_code == 202
    results = response.json()["results"]
    assert [("id" in r, sorted(r.get("errors", {}))) for r in results] == [
        (True, []),
        (False, ["to"]),
        (False, ["template"]),
        (True, []),
    ]
    assert sorted(str(i) for i in Email.objects.values_list("id", flat=True)) == sorted(
        [results[0]["id"], results[3]["id"]]
    )


@pytest.mark.django_db
def test_a_batch_stores_each_email_as_a_single_submit_does(alice):
    body = email_payload(
        **{"from": "Åsa Öberg <asa@example.com>"},
        to=["Zoë <zoe@example.org>", "bob@example.org"],
        cc=["carol@example.org"],
        reply_to=["help@example.com"],
        subject='Ünïcode ✓ "quotes" and \\ backslash',
        html='<p>tab\there, {"json": [1]}</p>',
        headers={"X-Campaign": "spring"},
        tags=["welcome", "b2c"],
        metadata={"order": "42", "note": "{}"},
        attachments=[{"filename": "a.txt", "content": "aGVsbG8=", "content_type": "text/plain"}],
        send_at="2031-01-02T03:04:05.678901Z",
    )
    single_id = alice.post("/api/v1/emails", body, format="json").json()["id"]
    batch_id = _batch(alice, [body]).json()["results"][0]["id"]

    ignored = {"id", "created_at", "updated_at"}
    single, batched = (
        {k: v for k, v in Email.objects.filter(id=i).values().get().items() if k not in ignored}
        for i in (single_id, batch_id)
    )
    assert batched == single
    assert batched["recipients"] == ["bob@example.org", "carol@example.org", "zoe@example.org"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [({"emails": []}, "emails"), ({"emails": [email_payload()] * 501}, "emails"), ({"mails": []}, "emails")],
    ids=["empty", "501 emails", "no emails"],
)
def test_a_malformed_batch_is_refused_whole(alice, body, field):
    response = alice.post("/api/v1/emails/batch", body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not Email.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_500_reaches_the_sink(alice, sending_to_sink, services):
    services.worker()

    response = _batch(alice, [email_payload(to=[f"user{n}@example.org"]) for n in range(500)])

    ids = {r["id"] for r in response.json()["results"]}
    assert len(ids) == 500
    wait_for(lambda: Email.objects.filter(status="SENT").count() == 500, timeout=120, what="500 SENT")
    assert set(sending_to_sink.count_by_id()) == ids
