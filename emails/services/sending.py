"""Sending: claim, send through the providers, record each outcome as its send completes.

What a fault can cost is bounded by when outcomes are written. A send's outcome is written together with
whatever else finished since the last write (a group commit: one statement), so a worker that dies loses
only its sends in flight and one small group. While PostgreSQL cannot be reached, outcomes are kept and
written again with backoff for as long as the claim's lease holds: the lease fences the write (only the
claim that sent may record), so a late write is safe and an outage shorter than the lease resends nothing.

Times that other workers compare (leases, due times) come from PostgreSQL's clock, never this host's.
"""

from __future__ import annotations

import base64
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parseaddr
from queue import Empty, SimpleQueue
from typing import TypeVar
from uuid import UUID

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction

from emails import queue
from emails.fields import canonical_mailbox
from emails.models import Email, EmailEvent, Suppression
from emails.services import webhook_outbox
from infra import metrics
from infra.encryption import UndecryptableError
from providers import failover
from providers.concurrency import SendConcurrency
from providers.errors import ProviderError
from providers.inline import MessageWithInlineParts
from providers.outbox import ID_HEADER
from providers.registry import TEST_PROVIDER, parse_providers

log = logging.getLogger(__name__)

Status = Email.Status
T = TypeVar("T")

# Writes stop this long before the lease runs out by this host's monotonic reckoning, and before a stopping
# worker's deadline.
LEASE_MARGIN_SECONDS = 1
# Backoff between tries at the database while it is unreachable: short, so a write lands soon after it
# is back, and never longer than the last step.
DATABASE_RETRY_DELAYS = (0.1, 0.25, 0.5, 1, 2)
# How often the task's thread looks up from its sends (for writes to retry and for a shutdown).
WAKE_SECONDS = 0.2


def _never() -> float | None:
    return None


def email_send(email_id: UUID | str) -> None:
    """One attempt at one email (see emails_send)."""
    emails_send([email_id])


def emails_send(email_ids: list[UUID | str], *, shutdown_deadline: Callable[[], float | None] = _never) -> None:
    """One attempt at each email: claim the rows, send each through the providers (failing over) and
    record each outcome as it comes.

    `shutdown_deadline` tells when this process is stopping: the time.monotonic() by which it must be gone,
    or None. From then on no new send starts: the emails not started yet go back to PENDING at once, and
    the sends in flight are finished and recorded before the deadline.

    Safe to call twice for the same ids: only one caller wins each claim."""
    lease = _Lease(shutdown_deadline)

    def claim() -> list[Email]:
        lease.claimed = time.monotonic()  # PostgreSQL starts the lease after this
        return _claim(email_ids)

    emails = _when_database_answers(claim, until=lease.claims_wait_until, what="claim")
    if emails is None:  # the database stayed down, or this worker is stopping: the rows are still PENDING
        queue.publish(email_ids)  # for another worker, or for this one once the database is back
        return
    if not emails:
        return  # others are someone else's, not due yet, or final
    recorder = _Recorder(lease)
    suppressed = _when_database_answers(lambda: _suppressed(emails), until=lease.sends_start_until, what="read")
    if suppressed is None:
        return  # the database went away under the claim: the sweep takes the emails back after the lease
    to_send = []
    for email in emails:
        left_out = suppressed[email.id]
        events = [_event(EmailEvent.Type.SUPPRESSED, detail=_listed(left_out))] if left_out else []
        if left_out and left_out >= set(email.recipients):
            recorder.add(_Result(email, Status.FAILED, events, last_error="suppressed"))
            log.info("email %s not sent: every recipient is suppressed", email.id)
        else:
            to_send.append((email, left_out, events))
    _send_all(to_send, lease, recorder)
    recorder.write_all()


def _send_all(to_send: list[tuple[Email, set[str], list[EmailEvent]]], lease: _Lease, recorder: _Recorder) -> None:
    """Sends on the pool's threads, as many at a time as this process's concurrency allows (providers.concurrency),
    recording outcomes as they come: what a killed worker may send again is its sends in flight and the one
    group of outcomes it was writing.

    Each thread given to the batch (a lane) takes the next email as soon as its send is done, so sending never
    waits for this thread, which writes outcomes meanwhile."""
    permits: dict = {}  # closed breakers, asked once per batch
    concurrency = _send_concurrency()
    waiting = deque(to_send)
    outcomes: SimpleQueue = SimpleQueue()

    def lane() -> None:
        while True:
            try:
                email, left_out, events = waiting.popleft()
            except IndexError:
                return
            try:
                outcome = _attempt(email, left_out, permits, lease, recorder, concurrency)
            except BaseException as exc:  # _attempt makes failures outcomes; an outcome never put would hang the batch
                outcomes.put((email, events, exc))
                raise
            outcomes.put((email, events, outcome))

    lanes, unrecorded = 0, len(to_send)
    while unrecorded:
        while waiting and lanes < concurrency.limit():
            _send_pool().submit(lane)
            lanes += 1
        try:
            done = [outcomes.get(timeout=WAKE_SECONDS)]
            while not outcomes.empty():
                done.append(outcomes.get())
        except Empty:
            done = []
        for email, events, outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
            recorder.add(_result(email, outcome, events))
        unrecorded -= len(done)
        if lease.stopping():
            # What no lane has started goes back at once, whether or not a lane is free to hand it back.
            while True:
                try:
                    email, _, events = waiting.popleft()
                except IndexError:
                    break
                recorder.add(_result(email, failover.Outcome(defer_seconds=0), events))
                unrecorded -= 1
        recorder.write_when_due()
        if lease.must_be_gone():
            # Sends still running past the shutdown deadline stay claimed: the lease takes them back.
            log.warning("stopping with %d send(s) still in flight; their leases will take them back", unrecorded)
            return


class _Lease:
    """This task's time, by this host's monotonic clock: how long a claim waits for the database, when
    sends stop starting, until when outcomes may still be written, and whether the process is stopping.

    PostgreSQL wrote the claim's lease after `claimed`, so it holds at least until claimed +
    MAIL_LEASE_SECONDS."""

    def __init__(self, shutdown_deadline: Callable[[], float | None]) -> None:
        self.shutdown_deadline = shutdown_deadline
        self.started = self.claimed = time.monotonic()

    def _until(self, end: float) -> float:
        """`end`, or earlier when the process must be gone before it."""
        deadline = self.shutdown_deadline()
        return end if deadline is None else min(end, deadline - LEASE_MARGIN_SECONDS)

    def claims_wait_until(self) -> float:
        return self._until(self.started + settings.MAIL_LEASE_SECONDS)

    def sends_start_until(self) -> float:
        # Sends start in the first half of the lease: the rest is for the slowest send and its write.
        return self.claimed + settings.MAIL_LEASE_SECONDS / 2

    def writes_until(self) -> float:
        return self._until(self.claimed + settings.MAIL_LEASE_SECONDS - LEASE_MARGIN_SECONDS)

    def stopping(self) -> bool:
        return self.shutdown_deadline() is not None

    def must_be_gone(self) -> bool:
        deadline = self.shutdown_deadline()
        return deadline is not None and time.monotonic() > deadline - LEASE_MARGIN_SECONDS


def _when_database_answers(read: Callable[[], T], *, until: Callable[[], float], what: str) -> T | None:
    """`read()`, tried again with backoff while the database is unreachable, until `until()` (monotonic);
    None when it never answered."""
    failures = 0
    while True:
        try:
            return read()
        except (OperationalError, InterfaceError) as exc:
            if not failures:
                log.warning("database unavailable (%s) for a %s; waiting for it", type(exc).__name__, what)
            connection.close()  # broken: the next try reconnects
            delay = _backoff(failures)
            failures += 1
            if time.monotonic() + delay > until():
                log.warning("database still unavailable; %s given up", what)
                return None
            time.sleep(delay)


def _backoff(failures: int) -> float:
    return DATABASE_RETRY_DELAYS[min(failures, len(DATABASE_RETRY_DELAYS) - 1)]


_pool: ThreadPoolExecutor | None = None
_concurrency: SendConcurrency | None = None


def _send_pool() -> ThreadPoolExecutor:
    """This process's senders: up to MAIL_SEND_THREADS provider calls overlap while they wait on the network.
    Only the provider calls run there; the database is read and written by the task's own thread."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(settings.MAIL_SEND_THREADS, thread_name_prefix="send")
    return _pool


def _send_concurrency() -> SendConcurrency:
    """How many of the pool's threads this process's sends use at once, sized from what the sends take."""
    global _concurrency
    providers, ceiling = settings.MAIL_PROVIDERS, settings.MAIL_SEND_THREADS
    if _concurrency is None or _concurrency.ceiling != ceiling or _concurrency.providers is not providers:
        try:
            rates = [provider.rate_limit for provider in parse_providers(providers)]
        except Exception:  # a bad MAIL_PROVIDERS fails each send, which records why
            rates = []
        _concurrency = SendConcurrency(ceiling, providers, rates)
    return _concurrency


def _attempt(
    email: Email, left_out: set[str], permits: dict, lease: _Lease, recorder: _Recorder, concurrency: SendConcurrency
) -> failover.Outcome:
    # A send starts only while its outcome can be recorded in time: not late in the lease, not while the
    # worker stops, not while the database cannot take outcomes (it would only add to what is at risk).
    # Otherwise its email goes back to PENDING at once, for another worker or a later claim.
    if time.monotonic() > lease.sends_start_until() or lease.stopping() or recorder.database_down:
        return failover.Outcome(defer_seconds=0)
    try:
        started, cpu_started = time.perf_counter(), time.thread_time()
        message = build_message(email, leave_out=left_out)
        if email.test:  # never handed to a provider, as Postmark's test token: SENT by the built-in `test`
            return failover.Outcome(provider=TEST_PROVIDER, message_id=message.extra_headers["Message-ID"])
        outcome = failover.send(message, ticket=str(email.id), permits=permits)
    except Exception as exc:
        # A bug or an unexpected failure must still end in an outcome, not a lease left to expire.
        # No message in the log: it may quote content.
        log.error("email %s: unexpected %s while sending", email.id, type(exc).__name__)
        error = ProviderError(f"internal error: {type(exc).__name__}", permanent=False)
        return failover.Outcome(failed=[failover.FailedTry("", error)])
    if outcome.sent and not outcome.failed:  # a provider's plain answer: what sizes the sends in flight
        concurrency.record(time.perf_counter() - started, time.thread_time() - cpu_started)
    return outcome


# What sending reads: the claim returns only these (the rest of a row is a fifth of the claim's cost).
SENDING_FIELDS = ("id", "from_email", "to", "cc", "bcc", "reply_to", "recipients", "subject", "text", "html",
                  "headers", "attachments", "attempts", "lease_until", "api_key_id", "test", "track_opens",
                  "track_clicks", "content")  # fmt: skip


def _claim(email_ids: list[UUID | str]) -> list[Email]:
    # One statement: the conditional update is the lock, RETURNING saves a second query. The lease and
    # the due time are PostgreSQL's clock (statement_timestamp(): now() outside a transaction), so a
    # worker host whose clock is off neither sends early nor writes a lease that ends at the wrong time.
    # `status || ''` keeps the planner on the primary key: matched against the partial index of
    # PENDING rows, with statistics a bulk insert has not reached yet, it would scan every pending row.
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {Email._meta.db_table}
                   SET status = %s, attempts = attempts + 1, updated_at = statement_timestamp(),
                       lease_until = statement_timestamp() + %s * interval '1 second'
                 WHERE id = ANY(%s::uuid[]) AND status || '' = %s AND next_attempt_at <= statement_timestamp()
             RETURNING {", ".join(connection.ops.quote_name(f) for f in SENDING_FIELDS)}""",  # noqa: S608 - ours
            [Status.PROCESSING, settings.MAIL_LEASE_SECONDS, [str(i) for i in email_ids], Status.PENDING],
        )
        rows = cursor.fetchall()
    emails, unreadable = [], []
    for row in rows:
        try:
            emails.append(_email_of(row))
        except UndecryptableError as exc:
            log.error("email %s not sent: %s", row[0], exc)  # the exception names the variable, quotes nothing
            unreadable.append(row)
    if unreadable:
        _wait_for_keys(unreadable)
    return emails


def _email_of(row: tuple) -> Email:
    """The Email a claimed row is, its columns converted as a query converts them (stored content opened)."""
    values = {
        column.attname: value if value is None else _convert(column, value)
        for column, value in zip(_SENDING, row, strict=True)
    }
    return Email.from_db(connection.alias, _SENDING_IN_MODEL_ORDER, [values[name] for name in _SENDING_IN_MODEL_ORDER])


def _convert(column, value):
    for converter in column.get_db_converters(connection):
        value = converter(value, None, connection)
    return value


_SENDING = [Email._meta.get_field(name) for name in SENDING_FIELDS]
_SENDING_IN_MODEL_ORDER = [field.attname for field in Email._meta.concrete_fields if field.attname in SENDING_FIELDS]
KEYS_RETRY_SECONDS = 60


def _wait_for_keys(rows: list[tuple]) -> None:
    """Claimed emails whose content no key opens go back to PENDING, due again in a minute, their attempt
    not counted: they are sent once MAIL_ENCRYPTION_KEYS holds their key again, never failed for a setting."""
    lease_at = SENDING_FIELDS.index("lease_until")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {Email._meta.db_table} AS e
                   SET status = %s, attempts = e.attempts - 1, lease_until = NULL, updated_at = statement_timestamp(),
                       next_attempt_at = statement_timestamp() + %s * interval '1 second'
                  FROM unnest(%s::uuid[], %s::timestamptz[]) AS v (id, lease)
                 WHERE e.id = v.id AND e.status = %s AND e.lease_until = v.lease""",  # noqa: S608 - ours
            [Status.PENDING, KEYS_RETRY_SECONDS, [str(row[0]) for row in rows], [row[lease_at] for row in rows],
             Status.PROCESSING],
        )  # fmt: skip


def _suppressed(emails: list[Email]) -> dict[UUID, set[str]]:
    """Each email's recipients suppressed for its own key or for every key (one query for the batch). Another
    key's suppressions leave out no one: a bounce of one tenant's email never stops another's mail."""
    recipients = {address for email in emails for address in email.recipients}
    keys = {email.api_key_id for email in emails} - {None}
    listed = Suppression.objects.filter(address__in=recipients)
    rows = listed.filter(api_key__isnull=True) | listed.filter(api_key_id__in=keys)
    by_key: dict[int | None, set[str]] = {}
    for api_key_id, address in rows.values_list("api_key_id", "address"):
        by_key.setdefault(api_key_id, set()).add(address)
    every_key = by_key.get(None, set())
    return {
        email.id: (every_key | by_key.get(email.api_key_id, set())).intersection(email.recipients) for email in emails
    }


def _listed(addresses: set[str]) -> str:
    return ", ".join(sorted(addresses))


def build_message(email: Email, *, leave_out: set[str] = frozenset()) -> MessageWithInlineParts:
    def keep(addresses: list[str]) -> list[str]:
        if not leave_out:  # almost every email: no address to parse
            return addresses
        return [a for a in addresses if canonical_mailbox(parseaddr(a)[1]) not in leave_out]

    domain = parseaddr(email.from_email)[1].rpartition("@")[2]
    headers = {
        # The same Message-ID on every attempt lets receivers drop a duplicate delivery.
        "Message-ID": f"<{email.id}@{domain}>",
        **email.headers,
        ID_HEADER: str(email.id),
    }
    message = MessageWithInlineParts(
        subject=email.subject,
        body=email.text or email.html,
        from_email=email.from_email,
        to=keep(email.to),
        cc=keep(email.cc),
        bcc=keep(email.bcc),
        reply_to=email.reply_to,
        headers=headers,
    )
    if email.text and email.html:
        message.attach_alternative(email.html, "text/html")
    elif email.html:
        message.content_subtype = "html"
    # Applied by each provider that offers tracking (providers.base), left out by the others.
    message.tracking = {"track_opens": email.track_opens, "track_clicks": email.track_clicks}
    for attachment in email.attachments:
        content = base64.b64decode(attachment["content"])
        if attachment.get("content_id"):  # shown by the html as cid:<content_id>
            message.attach_inline(attachment["filename"], content, attachment["content_type"], attachment["content_id"])
        else:
            message.attach(attachment["filename"], content, attachment["content_type"])
    return message


def _event(type: str, provider: str = "", detail: str = "") -> EmailEvent:
    return EmailEvent(type=type, provider=provider, detail=detail)


@dataclass
class _Result:
    """One attempt's outcome, as it will be written. None leaves a column as it is."""

    email: Email
    status: str
    events: list[EmailEvent]
    provider: str | None = None
    message_id: str | None = None
    last_error: str | None = None
    retry_in: float | None = None  # PENDING: seconds until the next attempt
    counted: bool = True  # False: nothing was tried, the claim's attempt is given back
    possibly_sent_by: list[str] = field(default_factory=list)  # providers whose failed try may have delivered


def _result(email: Email, outcome: failover.Outcome, events: list[EmailEvent]) -> _Result:
    possibly_sent = [t.provider for t in outcome.failed if t.error.possibly_sent]
    for failed in outcome.failed:
        kind = EmailEvent.Type.POSSIBLY_SENT if failed.error.possibly_sent else EmailEvent.Type.RETRY
        events.append(_event(kind, failed.provider, failed.error.reason))
        log.info("email %s: %s failed (%s)", email.id, failed.provider, failed.error.kind)
    if outcome.sent:
        events.append(_event(EmailEvent.Type.SENT, outcome.provider, outcome.message_id))
        # Capped to the columns' sizes: one over-long id (an ESP's per-recipient ids) must not fail a write.
        return _Result(email, Status.SENT, events, provider=outcome.provider[:100],
                       message_id=outcome.message_id[:1000], last_error="", possibly_sent_by=possibly_sent)  # fmt: skip
    if not outcome.failed:  # nothing was tried (a rate limit's slot is far off, a hand-back)
        return _Result(email, Status.PENDING, events, retry_in=outcome.defer_seconds or 0, counted=False)
    last = outcome.failed[-1]
    if outcome.permanent or not email.can_retry():
        reason = last.error.reason
        if not last.error.permanent:
            reason += f" (gave up after {email.attempts} attempts)"
        if events[-1].type == EmailEvent.Type.RETRY:
            events.pop()  # the last try's event is the failure itself
        events.append(_event(EmailEvent.Type.FAILED, last.provider, reason))
        return _Result(email, Status.FAILED, events, provider=last.provider, last_error=reason,
                       possibly_sent_by=possibly_sent)  # fmt: skip
    return _Result(email, Status.PENDING, events, provider=last.provider, last_error=last.error.reason,
                   retry_in=retry_delay(email.attempts), possibly_sent_by=possibly_sent)  # fmt: skip


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt: doubling from MAIL_RETRY_BACKOFF, with jitter, capped."""
    delay = settings.MAIL_RETRY_BACKOFF * 2 ** (attempts - 1) * random.uniform(0.8, 1.2)  # noqa: S311
    return min(delay, settings.MAIL_RETRY_BACKOFF_MAX)


class _Recorder:
    """Writes outcomes in groups: what finished since the last write goes out in one statement. While the
    database is unreachable the outcomes wait here and the write is tried again with backoff, until the
    lease runs out (or the process must be gone); past that the sweep takes the emails back, and what was
    sent may go out again: logged with each id."""

    def __init__(self, lease: _Lease) -> None:
        self.lease = lease
        self.waiting: list[_Result] = []
        self.failures = 0  # consecutive failed writes
        self.next_try = 0.0
        self.database_down = False  # the last write failed: no new send starts (read by the send threads)

    def add(self, result: _Result) -> None:
        self.waiting.append(result)

    def write_when_due(self) -> None:
        if self.waiting and time.monotonic() >= self.next_try:
            self._write()

    def write_all(self) -> None:
        """Writes what waits, trying again while the lease allows."""
        while self.waiting:
            if time.monotonic() >= self.lease.writes_until():
                log.warning("database unavailable until the lease ran out; %d outcome(s) not recorded: %s",
                            len(self.waiting), " ".join(str(r.email.id) for r in self.waiting))  # fmt: skip
                _count_possible_duplicates(self.waiting)
                _unrecorded_sends(self.waiting)
                return
            time.sleep(max(0.0, self.next_try - time.monotonic()))
            self._write()

    def _write(self) -> None:
        results = self.waiting
        try:
            recorded = _record(results)
        except (OperationalError, InterfaceError) as exc:
            if not self.database_down:
                log.warning("database unavailable (%s) while recording %d outcome(s); keeping them",
                            type(exc).__name__, len(results))  # fmt: skip
            self.database_down = True
            connection.close()  # broken: the next try reconnects
            self.next_try = time.monotonic() + _backoff(self.failures)
            self.failures += 1
            return
        if self.database_down:
            log.info("database back: %d outcome(s) recorded", len(results))
        self.waiting, self.database_down, self.failures = [], False, 0
        _after_recording(results, recorded)


def _record(results: list[_Result]) -> set[str]:
    """Writes the outcomes, each only while its claim still holds, with their events (in order) and the
    webhook messages of those that became SENT or FAILED: one statement for the group. Returns the ids
    written; raises the database's errors."""
    emails, events = [], []
    for result in results:
        email = result.email
        emails += [str(email.id), email.lease_until, result.status, result.provider, result.message_id,
                   result.last_error, result.retry_in, 0 if result.counted else 1]  # fmt: skip
        for event in result.events:
            events += [str(email.id), event.type, event.provider[:100], event.detail, len(events)]
    email_rows = ", ".join(["(%s::uuid, %s::timestamptz, %s, %s, %s, %s, %s::float8, %s::int)"] * len(results))
    insert_events = ""
    if events:
        event_rows = ", ".join(["(%s::uuid, %s, %s, %s, %s::int)"] * (len(events) // 5))
        insert_events = f""", events AS (
            INSERT INTO {EmailEvent._meta.db_table} (email_id, type, provider, detail, at)
            SELECT v.email_id, v.type, v.provider, v.detail, statement_timestamp()
              FROM (VALUES {event_rows}) AS v (email_id, type, provider, detail, n)
              JOIN done ON done.id = v.email_id
             ORDER BY v.n  -- ids in this order: the timeline sorts by (at, id)
        )"""  # noqa: S608 - table names and placeholders are ours
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH done AS (
                    UPDATE {Email._meta.db_table} AS e
                       SET status = v.status,
                           provider = COALESCE(v.provider, e.provider),
                           provider_message_id = COALESCE(v.message_id, e.provider_message_id),
                           last_error = COALESCE(v.last_error, e.last_error),
                           sent_at = CASE WHEN v.status = %s THEN statement_timestamp() ELSE e.sent_at END,
                           next_attempt_at = COALESCE(statement_timestamp() + v.retry_in * interval '1 second',
                                                      e.next_attempt_at),
                           attempts = e.attempts - v.uncounted,
                           lease_until = NULL, updated_at = statement_timestamp()
                      FROM (VALUES {email_rows})
                           AS v (id, lease, status, provider, message_id, last_error, retry_in, uncounted)
                     WHERE e.id = v.id AND e.status = %s AND e.lease_until = v.lease
                 RETURNING e.id, e.status, e.api_key_id, e."to", e.tags, e.metadata, e.provider,
                           e.provider_message_id, e.attempts, e.last_error
                ){insert_events}, hooks AS (
                    {webhook_outbox.status_change_sql(source="done AS d", row="d")}
                    RETURNING 1
                )
                SELECT id, (SELECT count(*) FROM hooks) FROM done""",  # noqa: S608 - table names and placeholders are ours
            [Status.SENT, *emails, Status.PROCESSING, *events],
        )
        rows = cursor.fetchall()
    if rows and rows[0][1]:
        transaction.on_commit(webhook_outbox.kick)
    return {str(row[0]) for row in rows}


def _count_possible_duplicates(results: list[_Result]) -> None:
    """Failed tries that may have delivered; called once per outcome, whether or not it is recorded."""
    for result in results:
        for provider in result.possibly_sent_by:
            metrics.POSSIBLE_DUPLICATES.labels(provider).inc()


def _unrecorded_sends(results: list[_Result]) -> None:
    """Sends whose outcome will never be written (the lease ran out first): the sweep sends them again.
    Counted with the possible duplicates, so that even a long outage's duplicates are not silent."""
    for result in results:
        if result.status == Status.SENT:
            metrics.POSSIBLE_DUPLICATES.labels(result.provider).inc()


def _after_recording(results: list[_Result], recorded: set[str]) -> None:
    """Counts, logs and publishes what was written."""
    sent, again = [], {}
    _count_possible_duplicates(results)
    for result in results:
        email = result.email
        if str(email.id) not in recorded:
            log.warning("email %s: lease lost before the outcome was recorded; outcome dropped", email.id)
            _unrecorded_sends([result])  # the sweep took it back: it goes out again
            continue
        if result.status == Status.SENT:
            metrics.SENT.labels(result.provider).inc()
            sent.append(str(email.id))
        elif result.status == Status.FAILED:
            metrics.FAILED.labels(result.provider or "").inc()
            log.warning("email %s failed (%s, attempt %d)", email.id, result.provider or "not sent", email.attempts)
        else:
            if result.counted:
                log.info("email %s will be retried in %.1fs (attempt %d)", email.id, result.retry_in, email.attempts)
            if result.retry_in <= settings.MAIL_SWEEP_INTERVAL:  # later ones: the sweep publishes them when due
                again.setdefault(result.retry_in, []).append(email.id)
    for delay, ids in again.items():
        queue.publish(ids, countdown=delay)
    if sent:
        log.info("sent %d email(s): %s", len(sent), " ".join(sorted(sent)))
