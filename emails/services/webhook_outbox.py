"""The webhook outbox: each event a webhook asks for, written in the transaction of the change it reports (a
status becoming SENT or FAILED, a provider's tracking event), so that no crash between the change and its
delivery loses it. Workers deliver what is written here (emails.services.webhook_delivery).

The body is built here, in SQL, from the email as the change left it: every delivery attempt then sends the
same bytes, whatever happens to the email later."""

from __future__ import annotations

import logging
import os
import threading
from uuid import UUID

from celery import current_app

from emails.models import Email, Webhook, WebhookMessage
from infra.encryption import open_json
from infra.redis import get_redis

log = logging.getLogger(__name__)

DELIVER_TASK = "emails.tasks.deliver_webhooks"
KICK_KEY = "mailservice:webhooks:kick"
_EMAILS = Email._meta.db_table
_WEBHOOKS = Webhook._meta.db_table
_MESSAGES = WebhookMessage._meta.db_table


def payload_sql(row: str, event_type: str, event_at: str, event_detail: str, event_extra: str = "") -> str:
    """The body of an event about the email `row` (an alias of a relation with the email's columns, as the
    change left them): the contract's {type, timestamp, data}; `event_extra`, more pairs of data.event."""
    return f"""jsonb_build_object(
        'type', {event_type},
        'timestamp', {event_at},
        'data', jsonb_build_object(
            'id', {row}.id, 'status', {row}.status, 'to', to_jsonb({row}."to"), 'tags', to_jsonb({row}.tags),
            'metadata', {row}.metadata, 'provider', {row}.provider, 'provider_message_id', {row}.provider_message_id,
            'attempts', {row}.attempts, 'last_error', {row}.last_error,
            'event', jsonb_build_object(
                'type', {event_type}, 'at', {event_at}, 'detail', {event_detail}{event_extra})))"""


def opened_payload(payload: dict) -> dict:
    """A stored body as its receiver gets it: the email's metadata in clear (payload_sql() copies the column as
    stored, and so sealed when encryption is on)."""
    data = payload.get("data")
    if isinstance(data, dict) and "metadata" in data:
        data["metadata"] = open_json(data["metadata"])
    return payload


def insert_sql(
    *, source: str, row: str, event_type: str, event_at: str, event_detail: str, where: str, event_extra: str = ""
) -> str:
    """INSERT ... SELECT of one message per webhook of the email's key that asks for the event, for each email
    `row` of `source` (a FROM item: the emails table, or a CTE holding the emails' updated columns)."""
    return f"""INSERT INTO {_MESSAGES}
                   (id, webhook_id, email_id, type, payload, status, attempts, next_attempt_at, created_at)
            SELECT gen_random_uuid(), w.id, {row}.id, {event_type},
                   {payload_sql(row, event_type, event_at, event_detail, event_extra)},
                   'pending', 0, statement_timestamp(), statement_timestamp()
              FROM {source}
              JOIN {_WEBHOOKS} AS w ON w.api_key_id = {row}.api_key_id AND w.active
                   AND (cardinality(w.events) = 0 OR {event_type} = ANY(w.events))
             WHERE {where}"""  # noqa: S608 - table names and expressions are ours


def status_change_sql(*, source: str, row: str, where: str = "TRUE") -> str:
    """Messages for the emails `row` of `source` whose status became SENT (email.sent, its detail the
    provider's message id) or FAILED (email.failed, its detail the error)."""
    return insert_sql(
        source=source,
        row=row,
        event_type=f"'email.' || lower({row}.status)",
        event_at="to_jsonb(statement_timestamp())",
        event_detail=f"CASE WHEN {row}.status = 'SENT' THEN {row}.provider_message_id ELSE {row}.last_error END",
        where=f"{row}.status IN ('SENT', 'FAILED') AND ({where})",
    )


def enqueue_status_changes(cursor, email_ids: list[UUID]) -> int:
    """In the caller's transaction, after it changed these emails' status: their email.sent / email.failed
    messages. Returns how many were written."""
    if not email_ids:
        return 0
    cursor.execute(
        status_change_sql(source=f"{_EMAILS} AS e", row="e", where="e.id = ANY(%s::uuid[])"),
        [[str(email_id) for email_id in email_ids]],
    )
    return cursor.rowcount


def enqueue_provider_event(cursor, *, email_id: UUID, event_type: str, at, detail: str, recipient: str) -> int:
    """In the caller's transaction: messages for a provider's event (`email.bounced`, ...) about one email and
    one of its recipients, which data.event names (`recipient`: an email to three addresses bounces for one)."""
    cursor.execute(
        insert_sql(
            source=f"{_EMAILS} AS e",
            row="e",
            event_type="%(type)s::text",
            event_at="to_jsonb(%(at)s::timestamptz)",
            event_detail="%(detail)s::text",
            event_extra=", 'recipient', %(recipient)s::text",
            where="e.id = %(id)s",
        ),
        {"type": event_type, "at": at, "detail": detail, "recipient": recipient, "id": str(email_id)},
    )
    return cursor.rowcount


# Kicks within this long of one another are one: a burst of sends asks for one delivery run, not one per group.
KICK_EVERY_MS = 200


def kick() -> None:
    """Asks the webhooks worker to deliver what was just written (call it after commit), from a background
    thread: a broker that does not answer never holds up the caller (a send's recording, a provider's tracking
    request). Beat asks every 5 s anyway, which delivers every retry and what a lost kick left."""
    _kicker.wanted.set()
    _kicker.ensure_running()


class _Kicker:
    """One thread per process that sends the delivery task when kicks came, at most one per KICK_EVERY_MS
    across all processes (a Redis key set NX with that expiry)."""

    def __init__(self) -> None:
        self.wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def ensure_running(self) -> None:
        with self._lock:
            # A forked worker process has the event but not the thread: it starts its own.
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="webhook-kicks", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self.wanted.wait()
            self.wanted.clear()
            try:
                if get_redis().set(KICK_KEY, 1, nx=True, px=KICK_EVERY_MS):
                    current_app.send_task(DELIVER_TASK, expires=60)
            except Exception as exc:  # the outbox holds the messages: a lost kick only delays them
                log.warning("webhooks: delivery not requested (%s); beat's run delivers them", type(exc).__name__)


_kicker = _Kicker()
