"""The Redis stream door: real `manage.py consume_stream` processes reading a real Redis stream, a real worker
delivering to an SMTP sink, and the contract's results (one per entry), acknowledgements and idempotency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from emails.models import Email, IdempotencyKey
from emails.services import api_key_create
from emails.stream_door import GROUP, MAX_IDEMPOTENCY_KEY_LENGTH
from infra.redis import get_redis
from tests.conftest import email_payload
from tests.processes import ROOT, Process, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

STREAM = settings.MAIL_STREAM
RESULTS = f"{STREAM}:results"
# Tests that wait for a claim wait seconds, not the default's 30.
FAST_CLAIM = {"MAIL_STREAM_CLAIM_IDLE": "1"}


def _start_consumer(services, **env: str) -> Process:
    return services.stream(**env)


def _add(api_key: str | bytes, email: object, **fields: str | bytes) -> str:
    """Adds an entry (email as JSON unless given as bytes); returns its id."""
    body = email if isinstance(email, bytes) else json.dumps(email)
    return get_redis().xadd(STREAM, {"api_key": api_key, "email": body, **fields}).decode()


def _pending_entries() -> list[dict]:
    """The group's entries read and not acknowledged; none before the consumer has made its group (it says
    "Consuming" just before)."""
    try:
        return get_redis().xpending_range(STREAM, GROUP, min="-", max="+", count=100)
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return []


def _results() -> dict[str, list[dict[str, object]]]:
    """Every result on the results stream, by the entry it answers: {"email_id": ...} or {"errors": {...}}."""
    by_entry: dict[str, list[dict[str, object]]] = {}
    for _, fields in get_redis().xrange(RESULTS):
        fields = {name.decode(): value.decode() for name, value in fields.items()}
        entry = fields.pop("entry")
        if "errors" in fields:
            fields["errors"] = json.loads(fields["errors"])
        by_entry.setdefault(entry, []).append(fields)
    return by_entry


def _answered(entry_ids: list[str], timeout: float = 60) -> dict[str, dict[str, object]]:
    """The one result of each entry, once every one has its result."""
    wait_for(lambda: set(entry_ids) <= set(_results()), timeout=timeout, what=f"results for {len(entry_ids)} entries")
    results = _results()
    assert all(len(results[entry_id]) == 1 for entry_id in entry_ids), "one result per entry"
    return {entry_id: results[entry_id][0] for entry_id in entry_ids}


def _pending() -> int:
    return get_redis().xpending(STREAM, GROUP)["pending"]


def _key(name: str = "stream") -> str:
    return api_key_create(name=name)[1]


def test_1000_entries_with_a_consumer_killed_mid_stream_get_one_result_each_and_are_sent_once(
    services, sending_to_sink
):
    """Invalid entries and repeated idempotency keys among them, from two API keys; the consumer is SIGKILLed
    with a batch in hand after the first results, and another starts: it claims what the dead one held."""
    sink = sending_to_sink
    alice, bob = _key(name="alice"), _key(name="bob")
    entries: dict[str, str] = {}  # entry id → what it is
    for n in range(1000):
        block, kind = divmod(n, 20)
        if kind == 0:
            entry_id, what = _add(alice, b'{"from": "shop@example.com", "to": ', idempotency_key=f"n{n}"), "not json"
        elif kind == 1:
            entry_id, what = _add(bob, email_payload(to=["not an address"])), "invalid"
        elif kind == 2:
            entry_id, what = _add("ms_not-a-key", email_payload()), "bad key"
        elif kind in (3, 4, 5):
            # Six entries per key, in two blocks: repeats in one read and across reads (and across the kill).
            key = f"order-{block // 2}"
            entry_id, what = _add(alice, email_payload(subject=f"Order {block // 2}"), idempotency_key=key), key
        else:
            entry_id, what = _add(alice if n % 2 else bob, email_payload(subject=f"Entry {n}")), "valid"
        entries[entry_id] = what
    ids = list(entries)

    first = _start_consumer(services, **FAST_CLAIM)
    wait_for(lambda: get_redis().xlen(RESULTS) >= 100 and _pending(), timeout=60, interval=0.001,
             what="a batch in hand after the first results")  # fmt: skip
    first.kill()
    assert get_redis().xlen(RESULTS) < 1000 and _pending(), "the kill must land mid-stream, with entries read"
    fast_recovery = {"MAIL_SWEEP_INTERVAL": "1"}  # ids the dead consumer had not yet published
    services.worker(**fast_recovery)
    services.beat(**fast_recovery)
    _start_consumer(services, **FAST_CLAIM)

    results = _answered(ids)
    assert _pending() == 0
    by_key: dict[str, set[str]] = {}
    valid_ids = []
    for entry_id, what in entries.items():
        result = results[entry_id]
        if what == "not json":
            assert list(result["errors"]) == ["email"]
        elif what == "invalid":
            assert list(result["errors"]) == ["to"]
        elif what == "bad key":
            assert list(result["errors"]) == ["api_key"]
        else:
            assert "errors" not in result, result
            valid_ids.append(result["email_id"])
            if what.startswith("order-"):
                by_key.setdefault(what, set()).add(result["email_id"])
    assert len(by_key) == 25 and all(len(email_ids) == 1 for email_ids in by_key.values()), "a key is one email"
    emails = set(valid_ids)
    assert len(valid_ids) == 850 and len(emails) == 700 + 25, "the others each an email of their own"
    assert Email.objects.count() == len(emails), "nothing stored twice"
    wait_for(lambda: Email.objects.filter(status=Email.Status.SENT).count() == len(emails), timeout=120,
             what="every email to be SENT")  # fmt: skip
    assert sink.count_by_id() == Counter(dict.fromkeys(emails, 1)), "each delivered once"


BAD_ENTRIES = {
    "not json": ({"email": b"{'from': 'shop@example.com'}"}, "email"),
    "not utf-8": ({"email": b'{"subject": "\xff"}'}, "email"),
    "nested too deep": ({"email": b"[" * 100 + b"]" * 100}, "email"),
    "too large": ({"email": b" " * (settings.MAIL_MAX_REQUEST_BYTES + 1)}, "email"),
    "no email": ({"email": None}, "email"),
    "no api key": ({"api_key": None}, "api_key"),
    "unknown api key": ({"api_key": "ms_" + "x" * 43}, "api_key"),
    "api key too long": ({"api_key": "ms_" + "x" * 10_000}, "api_key"),
    "invalid field": ({"email": json.dumps(email_payload(subject="two\nlines"))}, "subject"),
    "unknown email field": ({"email": json.dumps(email_payload(colour="red"))}, "colour"),
    "unknown entry field": ({"colour": "red"}, "colour"),
    "empty idempotency key": ({"idempotency_key": ""}, "idempotency_key"),
    "idempotency key too long": ({"idempotency_key": "k" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1)}, "idempotency_key"),
    "idempotency key with NUL": ({"idempotency_key": "a\x00b"}, "idempotency_key"),
}


def test_a_bad_entry_is_answered_with_errors_naming_the_field_and_acknowledged(services):
    key = _key()
    ids = {}
    for name, (fields, _) in BAD_ENTRIES.items():
        entry = {"api_key": key, "email": json.dumps(email_payload()), **fields}
        ids[name] = get_redis().xadd(STREAM, {k: v for k, v in entry.items() if v is not None}).decode()
    good = _add(key, email_payload())
    consumer = _start_consumer(services)

    results = _answered([*ids.values(), good])
    for name, (_, field) in BAD_ENTRIES.items():
        assert field in results[ids[name]].get("errors", {}), (name, results[ids[name]])
    assert "email_id" in results[good]
    assert _pending() == 0, "every entry acknowledged: none is read again"
    assert Email.objects.count() == 1
    log = wait_for(lambda: good in consumer.log() and consumer.log(), timeout=10, what="the batch to be logged")
    assert ids["not json"] in log, "entry ids are logged"
    assert "example.org" not in log and "example.com" not in log and key not in log, "never content or keys"


def _create_key(database_url: str) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mailservice.settings", "DATABASE_URL": database_url}
    result = subprocess.run([sys.executable, "manage.py", "create_api_key", "stream"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return result.stdout.strip().splitlines()[-1]


def test_while_the_database_is_stopped_nothing_is_acknowledged_and_each_entry_is_stored_once_it_is_back(
    services, own_postgres
):
    key = _create_key(own_postgres.url)
    consumer = _start_consumer(services, DATABASE_URL=own_postgres.url)
    own_postgres.stop()
    bodies = [email_payload(subject=f"Order {n}") for n in range(5)]
    with get_redis().pipeline(transaction=True) as pipeline:  # at once: the blocked consumer reads them together
        for body in bodies:
            pipeline.xadd(STREAM, {"api_key": key, "email": json.dumps(body)})
        for _ in range(2):
            pipeline.xadd(STREAM, {"api_key": key, "email": json.dumps(bodies[0]), "idempotency_key": "order-0"})
        ids = [entry_id.decode() for entry_id in pipeline.execute()]

    def read_again() -> bool:  # read, failed, and read once more: still pending, unanswered
        pending = _pending_entries()
        return len(pending) == len(ids) and all(p["times_delivered"] >= 2 for p in pending)

    wait_for(read_again, timeout=60, what="the entries to be read again")
    assert get_redis().xlen(RESULTS) == 0, "no result while the database is down"
    assert "unavailable" in consumer.log()

    own_postgres.start()
    results = _answered(ids)
    assert _pending() == 0
    email_ids = [results[entry_id]["email_id"] for entry_id in ids]
    assert len(set(email_ids)) == 6 and email_ids[-1] == email_ids[-2]
    stored = own_postgres.query("SELECT id::text FROM emails_email")
    assert sorted(row[0] for row in stored) == sorted(set(email_ids)), "each stored once"


def test_two_entries_with_one_idempotency_key_in_one_read_get_the_same_email(services):
    key = _key()
    first = _add(key, email_payload(), idempotency_key="order-42")
    again = _add(key, email_payload(), idempotency_key="order-42")
    other = _add(key, email_payload(subject="Another order"), idempotency_key="order-42")
    _start_consumer(services)  # after the three were added: one read takes them all

    results = _answered([first, again, other])
    assert results[first]["email_id"] == results[again]["email_id"]
    assert list(results[other]["errors"]) == ["idempotency_key"], "the same key with another email is refused"
    assert Email.objects.count() == 1


def test_an_idempotency_key_is_the_api_keys_own_and_apart_from_the_rest_apis(services):
    alice_key, bob_key = _key(name="alice"), _key(name="bob")
    alice = APIClient()
    alice.credentials(HTTP_AUTHORIZATION=f"Bearer {alice_key}")
    by_rest = alice.post("/api/v1/emails", email_payload(), format="json", HTTP_IDEMPOTENCY_KEY="order-7")
    assert by_rest.status_code == 202
    entries = [_add(alice_key, email_payload(), idempotency_key="order-7"),
               _add(bob_key, email_payload(), idempotency_key="order-7")]  # fmt: skip
    _start_consumer(services)

    results = _answered(entries)
    email_ids = {results[entry_id]["email_id"] for entry_id in entries}
    assert len(email_ids) == 2 and by_rest.json()["id"] not in email_ids
    assert Email.objects.count() == 3
    assert sorted(IdempotencyKey.objects.values_list("key", flat=True)) == [
        "order-7",
        "stream:order-7",
        "stream:order-7",
    ]


def test_entries_a_dead_consumer_left_pending_are_claimed_after_the_claim_idle_time(services):
    key = _key()
    ids = [_add(key, email_payload(subject=f"Order {n}")) for n in range(3)]
    redis = get_redis()
    redis.xgroup_create(STREAM, GROUP, id="0")
    # A consumer that reads them, as consume_stream does, and dies before answering.
    read = redis.xreadgroup(GROUP, "dead-consumer", {STREAM: ">"}, count=10)
    read_at_ms = int(redis.time()[0] * 1000 + redis.time()[1] // 1000)
    assert len(read[0][1]) == 3
    _start_consumer(services, **FAST_CLAIM)

    results = _answered(ids)
    assert all("email_id" in result for result in results.values())
    assert _pending() == 0
    answered_at_ms = min(int(result_id.decode().split("-")[0]) for result_id, _ in redis.xrange(RESULTS))
    assert answered_at_ms - read_at_ms >= 1000, "claimed only once idle for MAIL_STREAM_CLAIM_IDLE"


def test_on_sigterm_it_answers_what_it_read_and_exits_0(services):
    key = _key()
    ids = [_add(key, email_payload(subject=f"Order {n}")) for n in range(2000)]
    consumer = _start_consumer(services)
    wait_for(lambda: get_redis().xlen(RESULTS) > 0, timeout=30, interval=0.002, what="the first results")
    consumer.terminate()
    wait_for(consumer.exited, timeout=15, what="consume_stream to exit")
    assert consumer.popen.returncode == 0
    assert _pending() == 0, "nothing read is left unanswered"
    answered = len(_results())
    assert 0 < answered < len(ids)
    assert Email.objects.count() == answered


def test_neither_stream_grows_without_bound(services):
    key = _key()
    ids = [_add(key, email_payload(subject=f"Order {n}")) for n in range(1000)]
    _start_consumer(services, MAIL_STREAM_RESULTS_MAXLEN="100", **FAST_CLAIM)
    wait_for(lambda: Email.objects.count() == len(ids), timeout=60, what="every entry stored")
    wait_for(lambda: _pending() == 0, timeout=30, what="every entry acknowledged")
    # "~": Redis trims whole nodes of the stream (100 entries each by default), so about the limit remains.
    assert 100 <= get_redis().xlen(RESULTS) <= 300
    wait_for(lambda: get_redis().xlen(STREAM) <= 200, timeout=30, what="the entries every group read trimmed")


def test_a_refused_entry_keeps_no_idempotency_key_so_the_corrected_one_is_stored(services):
    key = _key()
    refused = _add(key, email_payload(template="no-such-template"), idempotency_key="order-9")
    _start_consumer(services)
    assert list(_answered([refused])[refused]["errors"]) == ["template"]

    corrected = _add(key, email_payload(), idempotency_key="order-9")
    result = _answered([corrected])[corrected]
    assert Email.objects.filter(id=result["email_id"]).exists()


def test_results_that_cannot_be_written_leave_the_entries_pending_and_their_emails_are_stored_once(services):
    """The batch is committed, then its results cannot be written (the results key holds a string): nothing is
    acknowledged, the entries are read again and again, and each answered, once it can be, with the email
    stored the first time."""
    key = _key()
    get_redis().set(RESULTS, "in the way")
    ids = [_add(key, email_payload(subject=f"Order {n}")) for n in range(3)]
    ids.append(_add(key, email_payload(subject="Order 0"), idempotency_key="order-0"))
    _start_consumer(services)

    def read_again() -> bool:
        pending = _pending_entries()
        return len(pending) == len(ids) and all(p["times_delivered"] >= 3 for p in pending)

    wait_for(read_again, timeout=60, what="the entries to be read again")
    stored = set(map(str, Email.objects.values_list("id", flat=True)))
    assert len(stored) == len(ids), "committed the first time, not again"

    get_redis().delete(RESULTS)
    results = _answered(ids)
    assert {result["email_id"] for result in results.values()} == stored
    assert _pending() == 0
    assert Email.objects.count() == len(ids)
