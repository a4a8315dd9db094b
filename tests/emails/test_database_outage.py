"""PostgreSQL stopped, or frozen (a hung VM: connections stay open, nothing answers), for 10 s in the middle of
delivery: nothing is lost, nothing is sent twice, the API answers 503 JSON with Retry-After meanwhile, and the
worker and beat deliver new emails afterwards without a restart. A server of the test's own, never the machine's."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import email_payload
from tests.processes import ROOT, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

EMAILS = 300
OUTAGE_SECONDS = 10


def _request(url: str, *, key: str, body: object | None = None) -> tuple[int, dict, dict, float]:
    """(status, JSON body, headers, seconds taken)."""
    request = urllib.request.Request(url, method="POST" if body is not None else "GET")
    request.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
        request.data = json.dumps(body).encode()
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, dict(error.headers), error.read()
    return status, json.loads(raw), headers, time.monotonic() - started


def _api_key(database_url: str) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mailservice.settings", "DATABASE_URL": database_url}
    result = subprocess.run([sys.executable, "manage.py", "create_api_key", "outage"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_a_10s_database_outage_loses_nothing_and_sends_nothing_twice(fault, own_postgres, sink, settings, services):
    settings.MAIL_PROVIDERS = [sink.provider()]
    sink.set_latency(0.04)
    # An outage shorter than the lease costs no duplicate: outcomes wait for the database while it holds.
    env = {"DATABASE_URL": own_postgres.url, "MAIL_LEASE_SECONDS": "30", "MAIL_SWEEP_INTERVAL": "1"}
    key = _api_key(own_postgres.url)
    url = services.web(**env)
    status, body, _, _ = _request(f"{url}/api/v1/emails/batch", key=key, body={"emails": [email_payload()] * EMAILS})
    assert status == 202
    ids = [result["id"] for result in body["results"]]
    services.worker(**env)
    services.beat(**env)
    wait_for(lambda: len(sink.received) >= EMAILS // 4, timeout=60, what="delivery to be under way")

    if fault == "stopped":
        own_postgres.stop()
    else:
        own_postgres.freeze()
    outage_began = time.monotonic()
    sent_before = len(sink.received)
    answers = [
        _request(f"{url}/api/v1/emails", key=key, body=email_payload()),
        _request(f"{url}/api/v1/emails/batch", key=key, body={"emails": [email_payload()]}),
        _request(f"{url}/api/v1/emails/{ids[0]}", key=key),
        _request(f"{url}/api/v1/stats", key=key),
    ]
    time.sleep(max(0.0, outage_began + OUTAGE_SECONDS - time.monotonic()))  # the outage lasts its 10 s
    if fault == "stopped":
        own_postgres.start()
    else:
        own_postgres.thaw()

    for status, body, headers, took in answers:
        assert status == 503, body
        assert "detail" in body and int(headers["Retry-After"]) > 0
        assert took < 5, f"answered after {took:.1f}s"
    assert sent_before < EMAILS, "the outage must land mid-delivery"

    def sent() -> int:
        return own_postgres.query("SELECT count(*) FROM emails_email WHERE status = 'SENT'")[0][0]

    wait_for(lambda: sent() == EMAILS, timeout=120, what="every email to be SENT")
    # Afterwards, without a restart: a new email is accepted and delivered.
    status, body, _, _ = _request(f"{url}/api/v1/emails", key=key, body=email_payload())
    assert status == 202
    wait_for(lambda: sent() == EMAILS + 1, timeout=60, what="an email submitted after the outage to be SENT")

    counts = sink.count_by_id()
    assert set(counts) == {*ids, body["id"]}, "nothing lost, nothing stored from the 503s"
    duplicates = sum(counts.values()) - len(counts)
    assert duplicates == 0, f"{duplicates} emails sent twice"
    slowest = max(took for *_, took in answers)
    print(f"{fault}: {sent_before} sent before the outage, 0 duplicates, slowest 503 in {slowest:.2f}s")


def _possible_duplicates() -> float:
    from infra import metrics

    text = metrics.render().decode()  # the counters of every process
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mailservice_possible_duplicates_total{"))  # fmt: skip


def test_an_outage_longer_than_the_lease_costs_counted_duplicates_only(own_postgres, sink, settings, services):
    settings.MAIL_PROVIDERS = [sink.provider()]
    sink.set_latency(0.04)
    env = {"DATABASE_URL": own_postgres.url, "MAIL_LEASE_SECONDS": "3", "MAIL_SWEEP_INTERVAL": "1"}
    key = _api_key(own_postgres.url)
    url = services.web(**env)
    status, body, _, _ = _request(f"{url}/api/v1/emails/batch", key=key, body={"emails": [email_payload()] * 200})
    assert status == 202
    ids = [result["id"] for result in body["results"]]
    counted_before = _possible_duplicates()
    services.worker(**env)
    services.beat(**env)
    wait_for(lambda: len(sink.received) >= 50, timeout=60, what="delivery to be under way")

    own_postgres.stop()
    time.sleep(8)  # longer than the lease: the outcomes waiting to be written are given up
    own_postgres.start()

    wait_for(
        lambda: own_postgres.query("SELECT count(*) FROM emails_email WHERE status = 'SENT'")[0][0] == len(ids),
        timeout=120,
        what="every email to be SENT",
    )
    counts = sink.count_by_id()
    assert set(counts) == set(ids), "nothing lost"
    duplicates = sum(counts.values()) - len(counts)
    counted = _possible_duplicates() - counted_before
    assert duplicates <= counted, (
        f"{duplicates} duplicates, {counted:.0f} counted in mailservice_possible_duplicates_total"
    )
    print(f"outage past the lease: {duplicates} duplicates, {counted:.0f} counted")
