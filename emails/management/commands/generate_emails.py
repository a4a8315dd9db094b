"""Fills the database with a realistic mix of emails, to try the admin and the dashboard at scale.

Every generated email and key is a test one: sending records it SENT by the built-in `test` provider and hands
it to no provider, whatever MAIL_PROVIDERS says now or later."""

from __future__ import annotations

import io
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils import timezone

from emails.models import ApiKey, Email, EmailEvent
from providers.registry import TEST_PROVIDER, parse_providers

Status = Email.Status
Type = EmailEvent.Type
CHUNK = 20_000
DAYS = 30
# Reserved example domains (RFC 2606): should a generated row ever leave, it would reach nobody.
DOMAINS = ["example.com", "example.org", "example.net"]
SENDERS = ["Shop <orders@shop.example.com>", "Accounts <no-reply@accounts.example.com>",
           "News <news@news.example.com>"]  # fmt: skip
KINDS = [  # (tag, subject, text, html)
    ("order", "Your order #{n}", "Thank you for your order #{n}.", "<p>Thank you for your order <b>#{n}</b>.</p>"),
    ("password-reset", "Reset your password", "Follow the link to reset your password: https://example.com/r/{n}", ""),
    ("welcome", "Welcome aboard", "Welcome! Your account {n} is ready.", "<h1>Welcome!</h1><p>Account {n}.</p>"),
    ("invoice", "Invoice {n}", "Your invoice {n} is attached as a link: https://example.com/i/{n}", ""),
]
PERMANENT_ERRORS = ["SMTP 550 5.1.1 unknown user", "SMTP 554 5.7.1 rejected as spam", "HTTP 422 invalid recipient"]
TRANSIENT_ERRORS = ["SMTP 451 4.7.1 try again later", "timed out", "connection refused", "HTTP 429 rate limited",
                    "HTTP 503 service unavailable"]  # fmt: skip

EMAIL_COLUMNS = [
    "id", "api_key_id", "status", "from_email", "to", "cc", "bcc", "reply_to", "recipients", "subject", "text",
    "html", "headers", "tags", "metadata", "attachments", "template", "attempts", "send_at", "next_attempt_at",
    "lease_until", "provider", "provider_message_id", "last_error", "resent_from_id", "created_at", "updated_at",
    "sent_at", "test",
]  # fmt: skip
EVENT_COLUMNS = ["email_id", "type", "at", "provider", "detail"]
NULL = r"\N"
KEY_NAMES = ("generated-shop", "generated-accounts", "generated-news")
# A real key's prefix is its first 10 characters: this one names generate_emails' keys alone (migration 0009).
KEY_PREFIX = "ms_gen"


class Command(BaseCommand):
    help = (
        "Inserts N generated emails (with their events) over the last 30 days: mostly SENT, some FAILED, "
        "a few PENDING and PROCESSING, for three test API keys. Nothing is queued now; workers and beat take "
        "up the PENDING ones as they come due and the PROCESSING ones when their lease passes, and record them "
        f"SENT by the `{TEST_PROVIDER}` provider: a generated email is never handed to a provider."
    )

    def add_arguments(self, parser):
        parser.add_argument("count", type=int, help="how many emails")
        parser.add_argument("--providers", help="comma-separated provider names (default: MAIL_PROVIDERS' names)")
        parser.add_argument("--seed", type=int, default=None, help="for a repeatable mix")

    def handle(self, *args, count: int, providers: str | None, seed: int | None, **options):
        if count < 1:
            raise CommandError("count must be at least 1")
        names = providers.split(",") if providers else [p.name for p in parse_providers(settings.MAIL_PROVIDERS)]
        api_keys = _test_api_keys()
        self.stdout.write(
            f"generating {count} test emails for the test API keys {', '.join(k.name for k in api_keys)}: "
            f"never handed to a provider (sending records them SENT by `{TEST_PROVIDER}`)"
        )
        generator = EmailGenerator(
            now=timezone.now(),
            providers=names,
            api_key_ids=[k.id for k in api_keys],
            rng=random.Random(seed),  # noqa: S311 - sample data, not secrets
        )
        started = time.monotonic()
        done = 0
        with connection.cursor() as cursor:
            raw = cursor.cursor  # psycopg2's own, for COPY
            while done < count:
                size = min(CHUNK, count - done)
                emails, events = io.StringIO(), io.StringIO()
                for email_row, event_rows in generator.rows(size):
                    emails.write(email_row)
                    events.writelines(event_rows)
                emails.seek(0)
                events.seek(0)
                # COPY: an order of magnitude faster than INSERTs; each chunk is its own transaction.
                raw.copy_expert(_copy_sql(Email._meta.db_table, EMAIL_COLUMNS), emails)
                raw.copy_expert(_copy_sql(EmailEvent._meta.db_table, EVENT_COLUMNS), events)
                done += size
                self.stdout.write(f"{done} emails ({time.monotonic() - started:.0f}s)")
            self.stdout.write("analyzing")
            # Fresh statistics for the planner, and a visibility map for index-only scans.
            cursor.execute(f"VACUUM (ANALYZE) {Email._meta.db_table}, {EmailEvent._meta.db_table}")
        self.stdout.write(f"inserted {count} emails in {time.monotonic() - started:.0f}s:")
        for api_key in api_keys:
            self.stdout.write(f"  {generator.per_key[api_key.id]} for API key {api_key.name} (id {api_key.id}, test)")


def _copy_sql(table: str, columns: list[str]) -> str:
    quoted = ", ".join(f'"{column}"' for column in columns)
    return f"COPY {table} ({quoted}) FROM STDIN"


def _test_api_keys() -> list[ApiKey]:
    """The test keys the generated emails belong to, made on the first run (their secret is discarded: nobody
    uses them)."""
    return [
        ApiKey.objects.update_or_create(
            name=name,
            prefix=KEY_PREFIX,
            defaults={"test": True},
            create_defaults={"key_hash": ApiKey.hash(ApiKey.generate()), "test": True},
        )[0]
        for name in KEY_NAMES
    ]


def _text(value: str) -> str:
    """A value in COPY's text format."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _array(values: list[str]) -> str:
    return _text("{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}")


def _time(at: datetime | None) -> str:
    return at.isoformat() if at else NULL


class EmailGenerator:
    def __init__(self, *, now: datetime, providers: list[str], api_key_ids: list[int], rng: random.Random) -> None:
        self.now = now
        self.providers = providers
        # The first provider carries most of the traffic, as a primary does.
        self.weights = [8] + [2] * (len(providers) - 1)
        self.api_key_ids = api_key_ids
        self.per_key: Counter[int] = Counter()  # emails generated for each key
        self.rng = rng
        self.serial = 0

    def _created_at(self) -> datetime:
        # More mail by day than by night: reject part of the night-time draws.
        while True:
            at = self.now - timedelta(seconds=self.rng.uniform(0, DAYS * 86400))
            if self.rng.random() < (0.35 if at.hour < 7 else 1.0):
                return at

    def _status(self, age: timedelta) -> str:
        r = self.rng.random()
        if age < timedelta(minutes=2):  # the last minutes: some still in flight
            return Status.PENDING if r < 0.1 else Status.PROCESSING if r < 0.15 else Status.SENT
        return Status.SENT if r < 0.94 else Status.FAILED if r < 0.99 else Status.PENDING

    def rows(self, count: int) -> Iterator[tuple[str, list[str]]]:
        """(email row, event rows) in COPY text format."""
        rng = self.rng
        for _ in range(count):
            self.serial += 1
            n = self.serial
            email_id = uuid.uuid4()  # fresh on every run: a repeated --seed adds its mix again
            created = self._created_at()
            status = self._status(self.now - created)
            provider = rng.choices(self.providers, self.weights)[0]
            address = f"user{rng.randrange(50_000)}@{rng.choice(DOMAINS)}"
            cc = [f"team{rng.randrange(100)}@{DOMAINS[0]}"] if rng.random() < 0.05 else []
            tag, subject, text, html = rng.choice(KINDS)
            events: list[tuple[str, datetime, str, str]] = []
            at = created
            attempts, sent_at, send_at, lease, last_error, message_id = 0, None, None, None, "", ""
            next_attempt = created
            retries = 0 if rng.random() < 0.9 else rng.randint(1, 2)
            if status == Status.FAILED:
                retries = 0 if rng.random() < 0.6 else 4
            for _ in range(retries if status != Status.PENDING else rng.randint(0, 2)):
                at += timedelta(seconds=rng.uniform(1, 30) * 2**attempts)
                attempts += 1
                events.append((Type.RETRY, at, provider, rng.choice(TRANSIENT_ERRORS)))
            if status == Status.SENT:
                at += timedelta(seconds=rng.uniform(0.05, 2))
                attempts += 1
                sent_at, message_id = at, f"<{email_id}@example.com>"
                events.append((Type.SENT, at, provider, message_id))
                if rng.random() < 0.7:
                    events.append((Type.DELIVERED, at + timedelta(seconds=rng.uniform(1, 60)), provider, ""))
                if rng.random() < 0.25:
                    events.append((Type.OPENED, at + timedelta(minutes=rng.uniform(1, 600)), provider, ""))
            elif status == Status.FAILED:
                at += timedelta(seconds=rng.uniform(0.05, 2))
                attempts += 1
                error = rng.choice(PERMANENT_ERRORS) if attempts == 1 else rng.choice(TRANSIENT_ERRORS)
                last_error = error if attempts == 1 else f"{error} (gave up after {attempts} attempts)"
                events.append((Type.FAILED, at, provider, last_error))
            elif status == Status.PROCESSING:
                attempts += 1
                lease = self.now + timedelta(seconds=settings.MAIL_LEASE_SECONDS)
            elif attempts:  # PENDING after a transient failure: its retry is due soon
                last_error = events[-1][3]
                next_attempt = self.now + timedelta(seconds=rng.uniform(-30, 600))
            elif self.now - created > timedelta(minutes=2):  # PENDING for long: scheduled for later
                send_at = next_attempt = self.now + timedelta(hours=rng.uniform(0.1, 7 * 24))
            updated = max(at, created)
            if status in (Status.PENDING, Status.PROCESSING):
                provider = provider if attempts else ""
                updated = min(self.now, updated)
            api_key_id = rng.choice(self.api_key_ids)
            self.per_key[api_key_id] += 1
            values = [
                str(email_id), str(api_key_id), status, _text(rng.choice(SENDERS)),
                _array([address]), _array(cc), "{}", "{}", _array(sorted([address, *cc])),
                _text(subject.format(n=n)), _text(text.format(n=n)), _text(html.format(n=n)), "{}", _array([tag]),
                _text(f'{{"customer": "{n % 100_000}"}}'), "[]", "", str(attempts), _time(send_at), _time(next_attempt),
                _time(lease), provider, _text(message_id), _text(last_error), NULL, _time(created), _time(updated),
                _time(sent_at), "t",
            ]  # fmt: skip
            yield (
                "\t".join(values) + "\n",
                [f"{email_id}\t{t}\t{_time(min(a, self.now))}\t{p}\t{_text(d)}\n" for t, a, p, d in events],
            )
