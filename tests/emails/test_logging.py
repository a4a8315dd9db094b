"""Logs name emails by id: never their subject, body or addresses, even when a provider quotes them."""

import logging

import pytest
import requests

from emails.models import Email
from emails.services import api_key_create, email_send
from tests.conftest import email_payload
from tests.processes import wait_for

pytestmark = pytest.mark.django_db

SECRETS = ("Quarterly invoice 4471", "Dear Alice, your balance", "alice@example.org", "billing@example.com")


def test_a_full_send_logs_no_content_or_address(alice, sending_to_sink, caplog):
    caplog.set_level(logging.DEBUG)
    sending_to_sink.script("451 4.2.0 <alice@example.org> mailbox busy", "550 5.1.1 <alice@example.org> unknown")
    payload = email_payload(
        **{"from": "Billing <billing@example.com>", "to": ["Alice <alice@example.org>"]},
        subject="Quarterly invoice 4471",
        text="Dear Alice, your balance is due.",
        html="<p>Dear Alice, your balance is due.</p>",
    )
    sent_id = alice.post("/api/v1/emails", payload, format="json").json()["id"]
    failing_id = alice.post("/api/v1/emails", payload, format="json").json()["id"]
    bad = alice.post("/api/v1/emails", {**payload, "cc": ["not-an-address"]}, format="json")
    assert bad.status_code == 400

    email_send(failing_id)  # 451: retry
    Email.objects.filter(id=failing_id).update(next_attempt_at=Email.objects.get(id=failing_id).created_at)
    email_send(failing_id)  # 550: failed, the reply quoting the address
    email_send(sent_id)

    assert Email.objects.get(id=sent_id).status == Email.Status.SENT
    assert "alice@example.org" in Email.objects.get(id=failing_id).last_error  # stored for the operator...
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert sent_id in logged and failing_id in logged
    for secret in SECRETS:
        assert secret not in logged  # ...but never logged


def test_the_web_process_logs_no_address_that_a_path_or_query_holds(services):
    # As found by a probe: the access log and Django's "Not Found: <path>" warning showed the suppressed address.
    _, key = api_key_create(name="paths")
    url = services.web()
    web = services.processes[-1]
    bearer = {"Authorization": f"Bearer {key}"}
    suppressions = f"{url}/api/v1/suppressions"

    made = requests.post(suppressions, json={"address": "carol.private@example.org"}, headers=bearer, timeout=10)
    lifted = requests.delete(f"{suppressions}/carol.private@example.org", headers=bearer, timeout=10)
    gone = requests.delete(f"{suppressions}/carol.private%40example.org", headers=bearer, timeout=10)
    twice = requests.delete(f"{suppressions}/carol.private%2540example.org", headers=bearer, timeout=10)
    listed = requests.get(f"{url}/api/v1/emails?to=dave.private@example.org", headers=bearer, timeout=10)
    basic = requests.get(f"{url}/api/v1/emails", auth=(key, ""), timeout=10)  # a key where it does not belong

    assert [r.status_code for r in (made, lifted, gone, twice, listed)] == [201, 204, 404, 404, 200]
    assert basic.status_code == 401
    log = wait_for(lambda: (text := web.log()).count('"GET /api/v1/emails') == 2 and text, timeout=10,
                   what="the access log's lines")  # fmt: skip
    assert 'DELETE /api/v1/suppressions/<hidden> HTTP/1.1" 204' in log
    assert "Not Found: /api/v1/suppressions/<hidden>" in log
    assert 'GET /api/v1/emails?<hidden> HTTP/1.1" 200' in log
    for secret in ("private@example.org", "private%40example.org", "private%2540example.org", key):
        assert secret not in log
