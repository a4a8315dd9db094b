"""Fills the database with a realistic mix of emails, to try the admin and the dashboard at scale."""

from __future__ import annotations

import io
import random
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.utils import timezone

from emails.models import ApiKey, Email, EmailEvent
from providers.registry import BACKENDS, parse_providers

Status = Email.Status
Type = EmailEvent.Type
CHUNK = 20_000
DAYS = 30
# Reserved example domains (RFC 2606): a generated row that a worker ever picks up reaches nobody.
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
    "sent_at",
]  # fmt: skip
EVENT_COLUMNS = ["email_id", "type", "at", "provider", "detail"]
NULL = r"\N"
# Providers that deliver nowhere: generated emails that workers pick up cost nothing there.
LOCAL_BACKENDS = {BACKENDS["file"], BACKENDS["console"], BACKENDS["locmem"]}


class Command(BaseCommand):
    help = (
        "Inserts N generated emails (with their events) over the last 30 days: mostly SENT, some FAILED, "
        "a few PENDING and PROCESSING. Nothing is queued now, but running workers and beat send the PENDING "
        "ones as they come due and recover the PROCESSING ones when their lease passes: recipients are at "
        "example domains, so use it with local providers (file, console, locmem), or say --yes."
    )

    def add_arguments(self, parser):
        parser.add_argument("count", type=int, help="how many emails")
        parser.add_argument("--providers", help="comma-separated provider names (default: MAIL_PROVIDERS' names)")
        parser.add_argument("--seed", type=int, default=None, help="for a repeatable mix")
        parser.add_argument("--yes", action="store_true", help="generate even with a real provider configured")

    def handle(self, *args, count: int, providers: str | None, seed: int | None, yes: bool, **options):
        if count < 1:
            raise CommandError("count must be at least 1")
        real = [p.name for p in parse_providers(settings.MAIL_PROVIDERS) if p.backend not in LOCAL_BACKENDS]
        if real and not yes:
            raise CommandError(
                f"MAIL_PROVIDERS has real providers ({', '.join(real)}): workers would send the generated "
                "PENDING and PROCESSING emails through them to example.* addresses. Say --yes to go on."
            )
        names = providers.split(",") if providers else [p.name for p in parse_providers(settings.MAIL_PROVIDERS)]
        generator = EmailGenerator(
            now=timezone.now(),
            providers=names,
            api_key_ids=_api_key_ids(),
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
        self.stdout.write(f"inserted {count} emails in {time.monotonic() - started:.0f}s")


def _copy_sql(table: str, columns: list[str]) -> str:
    quoted = ", ".join(f'"{column}"' for column in columns)
    return f"COPY {table} ({quoted}) FROM STDIN"


def _api_key_ids() -> list[int]:
    """A few keys for the generated emails to belong to (their secret is discarded: nobody uses them)."""
    ids = []
    for name in ("generated-shop", "generated-accounts", "generated-news"):
        key = ApiKey.generate()
        api_key, _ = ApiKey.objects.get_or_create(
            name=name, defaults={"key_hash": ApiKey.hash(key), "prefix": "ms_gen"}
        )
        ids.append(api_key.id)
    return ids


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
            email_id = uuid.UUID(int=rng.getrandbits(128), version=4)
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
            values = [
                str(email_id), str(rng.choice(self.api_key_ids)), status, _text(rng.choice(SENDERS)),
                _array([address]), _array(cc), "{}", "{}", _array(sorted([address, *cc])),
                _text(subject.format(n=n)), _text(text.format(n=n)), _text(html.format(n=n)), "{}", _array([tag]),
                _text(f'{{"customer": "{n % 100_000}"}}'), "[]", "", str(attempts), _time(send_at), _time(next_attempt),
                _time(lease), provider, _text(message_id), _text(last_error), NULL, _time(created), _time(updated),
                _time(sent_at),
            ]  # fmt: skip
            yield (
                "\t".join(values) + "\n",
                [f"{email_id}\t{t}\t{_time(min(a, self.now))}\t{p}\t{_text(d)}\n" for t, a, p, d in events],
            )
