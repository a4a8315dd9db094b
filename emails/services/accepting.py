"""Accepting emails validated by emails.services.validating: rendering, storing, publishing, idempotency.
Raises the project's own errors (emails.errors), which each door maps to its protocol."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import getaddresses
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.template import TemplateSyntaxError
from django.utils import timezone

from emails import queue, rendering
from emails.errors import SENDER_NOT_ALLOWED, IdempotencyConflict, InvalidFields, TooLarge
from emails.fields import attachment_size, bare_address, canonical_mailbox
from emails.models import ApiKey, Email, EmailEvent, IdempotencyKey, Template
from emails.services.api_keys import api_key_may_send_as
from infra import metrics
from infra.encryption import open_json

Status = Email.Status


def _bare_addresses(*lists: list[str]) -> list[str]:
    return sorted({canonical_mailbox(bare_address(a)) for addresses in lists for a in addresses})


class _Templates:
    """The templates a request may use, rendered in one RenderSession: within MAIL_TEMPLATE_RENDER_SECONDS
    for the whole request, each email within MAIL_MAX_EMAIL_BYTES, and all within `max_total_bytes`."""

    def __init__(self, templates: dict[str, Template], *, max_total_bytes: int) -> None:
        self.templates = templates
        self.session = rendering.RenderSession(
            seconds=settings.MAIL_TEMPLATE_RENDER_SECONDS,
            max_bytes=settings.MAIL_MAX_EMAIL_BYTES,
            max_total_bytes=max_total_bytes,
        )

    def render(self, name: str, context: dict[str, Any]) -> dict[str, str]:
        """Template `name` rendered with `context`; raises InvalidFields naming `template` (or `context`)."""
        if name not in self.templates:
            raise InvalidFields({"template": [f"No template named {name!r}."]})
        template = self.templates[name]
        rendered = self.session.render((template.subject, template.text, template.html), context)
        if isinstance(rendered, rendering.RenderFailure):
            raise InvalidFields({rendered.field: [f"Template {name!r} does not render: {rendered.reason}"]})
        rendered["subject"] = " ".join(rendered["subject"].split())  # a subject is one line
        return rendered

    def __enter__(self) -> _Templates:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.session.close()


def _templates_for(api_key: ApiKey | None, names: set[str]) -> dict[str, Template]:
    """The templates named, as `api_key` sees them: its own, else the shared one of that name. Another key's
    template is not there, exactly as a name that does not exist."""
    if not names:
        return {}
    whose = Q(api_key=None) | Q(api_key=api_key) if api_key else Q(api_key=None)
    found: dict[str, Template] = {}
    for template in Template.objects.filter(whose, name__in=names):
        if template.api_key_id is not None or template.name not in found:  # its own wins over a shared one
            found[template.name] = template
    return found


def template_errors(*, subject: str, text: str, html: str) -> dict[str, str]:
    """Each part of a template that does not compile, or the bodies when it has neither text nor html (an
    email from it would be refused, as one without a body), with why: checked when a template is saved, so
    the mistake is not first seen as a 400 by the client that sends with it."""
    errors = {}
    if not (text or "").strip() and not (html or "").strip():
        message = "Give text, html or both: a template with neither renders no body of its own."
        errors["text"] = errors["html"] = message
    for part, source in (("subject", subject), ("text", text), ("html", html)):
        engine = rendering.HTML_ENGINE if part == "html" else rendering.TEXT_ENGINE
        try:
            engine.from_string(source or "")
        except TemplateSyntaxError as exc:
            errors[part] = f"Does not compile: {exc}"
        except RecursionError:  # the parser recurses once per nested operator ({% if not not ... %})
            errors[part] = "Does not compile: nested too deeply."
        except Exception as exc:  # the engine failing on what it was given: a relative {% include "./x" %}, ...
            errors[part] = f"Does not compile: the template engine cannot read it ({type(exc).__name__})."
    return errors


def _defaults() -> dict[str, Any]:
    """Each column's default (rows only read them, so one set serves a whole batch)."""
    return {field.attname: field.get_default() for field in Email._meta.concrete_fields}


# Headers that name who sent a message, beside From: a reader's client shows them ("on behalf of").
SENDER_HEADERS = {"sender", "resent-from", "resent-sender"}


def _check_senders(*, api_key: ApiKey | None, fields: dict[str, Any]) -> None:
    """Raises InvalidFields (code SENDER_NOT_ALLOWED) when the key may not send as the From address (which is
    also the envelope sender: providers/smtp.py derives it from From, and nothing a client sends sets it) or as
    an address in a Sender-like header. Runs on the validated, normalised fields, and costs nothing for a key without
    senders."""
    if api_key is None or not api_key.senders:
        return
    address = bare_address(fields["from_email"])
    if not api_key_may_send_as(api_key, address):
        message = f"This API key may not send from {address!r}. {_senders_shown(api_key)}"
        raise InvalidFields({"from": [message]}, code=SENDER_NOT_ALLOWED)
    for name, value in (fields.get("headers") or {}).items():
        if name.lower() in SENDER_HEADERS:
            # As Django reads an address header when it builds the message; each value is at most 998 chars.
            addresses = [addr for _, addr in getaddresses([value])]
            if not addresses or not all(addr and api_key_may_send_as(api_key, addr) for addr in addresses):
                # The contract names `from` for every sender the key may not use, the header ones included.
                message = f"This API key may not send with {name}: {value!r}. {_senders_shown(api_key)}"
                raise InvalidFields({"from": [message]}, code=SENDER_NOT_ALLOWED)


def _senders_shown(api_key: ApiKey) -> str:
    shown = ", ".join(api_key.senders[:10]) + (", …" if len(api_key.senders) > 10 else "")
    return f"It may send from: {shown}."


def _new_row(
    *, api_key: ApiKey | None, now: datetime, templates: _Templates, defaults: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    """A new email's row (every column, by name) from validated API fields: template rendered, size checked.
    A row, not an Email: for a batch of 500, building model instances cost a fifth of the request.

    Raises InvalidFields (bad template or context, a refused sender) or TooLarge."""
    _check_senders(api_key=api_key, fields=fields)  # first: a refused sender costs no rendering
    name, context = fields.pop("template", ""), fields.pop("context", None) or {}
    if name:
        rendered = templates.render(name, context)
        # What the request gives itself wins over the template.
        fields = {
            **{k: v for k, v in rendered.items() if v},
            **{k: v for k, v in fields.items() if v or k not in rendered},
        }
        if not fields.get("subject"):
            raise InvalidFields({"subject": [f"Template {name!r} gives no subject, and the request neither."]})
        if not fields.get("text") and not fields.get("html"):
            raise InvalidFields({"template": [f"Template {name!r} renders no text or html."]})
    attachments = fields.get("attachments") or []
    size = sum(len(fields.get(part, "").encode()) for part in ("text", "html")) + sum(map(attachment_size, attachments))
    if size > settings.MAIL_MAX_EMAIL_BYTES:
        limit = settings.MAIL_MAX_EMAIL_BYTES
        raise TooLarge(f"The email is {size} bytes with its attachments; at most {limit}.")
    resent_from = fields.pop("resent_from", None)
    to, cc, bcc = fields["to"], fields.get("cc") or [], fields.get("bcc") or []
    send_at = fields.get("send_at")
    return {
        **defaults,
        **fields,
        "id": uuid.uuid4(),
        "api_key_id": api_key.id if api_key else None,
        # A test key's emails, and resends of a test email, never reach a provider.
        "test": bool(api_key and api_key.test) or bool(resent_from and resent_from.test),
        "resent_from_id": resent_from.id if resent_from else None,
        "recipients": _bare_addresses(to, cc, bcc),
        "template": name,
        "next_attempt_at": max(send_at or now, now),
        "created_at": now,
        "updated_at": now,
    }


def email_create(*, api_key: ApiKey | None, **fields: Any) -> Email:
    """Stores a validated email as PENDING and enqueues it once the row is committed.

    `fields` are the API's: from_email, to, cc, bcc, reply_to, subject, text, html, headers, tags,
    metadata, attachments, template, context, send_at (and resent_from). Raises InvalidFields or TooLarge."""
    name = fields.get("template")
    available = _templates_for(api_key, {name} if name else set())
    now = timezone.now()
    with _Templates(available, max_total_bytes=settings.MAIL_MAX_EMAIL_BYTES) as templates:
        row = _new_row(api_key=api_key, now=now, templates=templates, defaults=_defaults(), **fields)
    _insert([row])  # one statement: its own transaction, unless the caller opened one
    _publish_when_due([row], now)  # so this runs now, or when the caller's transaction commits
    metrics.ACCEPTED.inc()
    email = Email(**row)
    email._state.adding, email._state.db = False, connection.alias  # saved, as bulk_create marks them
    _known_to_have_no_events(email)
    return email


def _known_to_have_no_events(email: Email) -> None:
    """A new email has no events: recorded as prefetch_related() would, so showing it costs no query."""
    events = EmailEvent.objects.none()
    events._result_cache = []  # evaluated already (even compiling the empty query costs ~0.3 ms)
    email._prefetched_objects_cache = {"events": events}


def email_create_batch(*, api_key: ApiKey, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stores the valid items of a batch in one INSERT; returns, in order, {"email": <its row>} for each
    stored item and {"refused": <its InvalidFields or TooLarge>} for the others.

    A constant number of queries whatever the batch's size: one for templates, one insert. Its templates
    render within MAIL_TEMPLATE_RENDER_SECONDS in all, and to at most MAIL_MAX_REQUEST_BYTES in all: no more
    than the batch could carry itself."""
    names = {item["template"] for item in items if item.get("template")}
    available = _templates_for(api_key, names)
    now, defaults = timezone.now(), _defaults()
    results: list[dict[str, Any]] = []
    with _Templates(available, max_total_bytes=settings.MAIL_MAX_REQUEST_BYTES) as templates:
        for item in items:
            try:
                row = _new_row(api_key=api_key, now=now, templates=templates, defaults=defaults, **item)
                results.append({"email": row})
            except (InvalidFields, TooLarge) as exc:
                results.append({"refused": exc})
    rows = [result["email"] for result in results if "email" in result]
    with transaction.atomic():
        _insert(rows)
        _publish_when_due(rows, now)
    metrics.ACCEPTED.inc(len(rows))
    return results


@dataclass(frozen=True)
class OnceItem:
    """One email of email_create_batch_once(): validated `fields` (email_fields()), its API key, and its
    idempotency key as stored (the door's namespace included) with the hash of the request that brought it."""

    api_key: ApiKey
    key: str
    request_hash: str
    fields: dict[str, Any]


# What a stored key of email_create_batch_once() answers: an IdempotencyKey row as the REST API writes one, the
# response holding only the email's id.
_ONCE_STATUS = 202


def email_create_batch_once(items: list[OnceItem]) -> list[dict[str, Any]]:
    """Stores each item once per (API key, idempotency key); returns, in order, {"email_id": <UUID>, "replayed":
    <bool>} for each item stored now or earlier, or {"refused": <InvalidFields, TooLarge or IdempotencyConflict>}.

    An item whose key was stored before (by an earlier call, or by a concurrent one) gets that email's id when its
    request_hash is the same, IdempotencyConflict when it is not; so does a later item of the same call with the
    same key. Items of several API keys may share a call. A refused item stores no key: sent again, it is
    judged again.

    The keys and the new emails go in one statement (keys first, in key order, so that concurrent callers wait
    for each other instead of deadlocking; an email only for a key inserted); keys stored before are then looked
    up, for the items whose key was not inserted, only when there are any. So every item is rendered, a repeat
    too (as one POST /api/v1/emails renders its own), and a repeat's answer is the stored one whatever its
    rendering says now. Raises what the database raises (nothing is stored then)."""
    if not items:
        return []
    first: dict[tuple[int, str], int] = {}  # (api key id, key) → the index of its first item
    for index, item in enumerate(items):
        first.setdefault((item.api_key.id, item.key), index)
    results: list[dict[str, Any] | None] = [None] * len(items)
    now, defaults = timezone.now(), _defaults()
    new: dict[tuple[int, str], dict[str, Any]] = {}
    refused: dict[tuple[int, str], InvalidFields | TooLarge] = {}
    templates_of = _templates_by_key([items[index] for index in first.values()])
    for ident, index in first.items():
        item = items[index]
        try:
            # Per item, as a single submit's: an entry's fate does not depend on what shares its batch.
            with _Templates(templates_of[item.api_key.id], max_total_bytes=settings.MAIL_MAX_EMAIL_BYTES) as templates:
                new[ident] = _new_row(
                    api_key=item.api_key, now=now, templates=templates, defaults=defaults, **item.fields
                )
        except (InvalidFields, TooLarge) as exc:
            refused[ident] = exc
    with transaction.atomic():
        stored = _insert_once(new, {ident: items[first[ident]].request_hash for ident in new}, now, defaults)
        # Stored before, by an earlier call or a concurrent one (the insert waited for it): theirs are the emails.
        others = [ident for ident in first if ident not in stored]
        earlier = _stored_once_keys(others)
        for ident in others:
            new.pop(ident, None)
            if ident in earlier:
                results[first[ident]] = _replayed(items[first[ident]], earlier[ident])
            else:  # refused, and new: judged again when sent again
                results[first[ident]] = {"refused": refused[ident]}
        rows = list(new.values())
        _publish_when_due(rows, now)
    for ident, row in new.items():
        results[first[ident]] = {"email_id": row["id"], "replayed": False}
    for index, item in enumerate(items):
        leader = first[(item.api_key.id, item.key)]
        if leader != index:
            results[index] = _follower(item, items[leader], results[leader])
    metrics.ACCEPTED.inc(len(rows))
    return results


def _templates_by_key(items: list[OnceItem]) -> dict[int, dict[str, Template]]:
    """The templates the items name, as each item's API key sees them: a query per API key that names any."""
    names: dict[int, set[str]] = {}
    keys: dict[int, ApiKey] = {}
    for item in items:
        keys[item.api_key.id] = item.api_key
        named = names.setdefault(item.api_key.id, set())
        if item.fields.get("template"):
            named.add(item.fields["template"])
    return {key_id: _templates_for(keys[key_id], named) for key_id, named in names.items()}


def _stored_once_keys(idents: list[tuple[int, str]]) -> dict[tuple[int, str], tuple[str, Any]]:
    """(request_hash, response) of the stored keys among `idents`, in one query: a look-up in the unique index per
    key, whatever the table's statistics say (joined to an IN list, a table just grown or truncated was read
    whole, for every batch)."""
    if not idents:
        return {}
    table = IdempotencyKey._meta.db_table
    with connection.cursor() as cursor:
        # LIMIT 1 (the key is unique): the subquery is not flattened into a join, which the planner may scan for.
        cursor.execute(
            f"""SELECT i.api_key_id, i.key, i.request_hash, i.response
                  FROM unnest(%s::bigint[], %s::text[]) AS wanted (api_key_id, key)
                  CROSS JOIN LATERAL (
                        SELECT api_key_id, key, request_hash, response FROM {table}
                         WHERE api_key_id = wanted.api_key_id AND key = wanted.key
                         LIMIT 1) AS i""",  # noqa: S608 - our table
            [[key_id for key_id, _ in idents], [key for _, key in idents]],
        )
        rows = cursor.fetchall()
    # Opened: rotate_encryption_key seals every stored response, these ({"id": …}, no content) too.
    return {(key_id, key): (request_hash, open_json(_json(response))) for key_id, key, request_hash, response in rows}


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value  # a cursor may give jsonb as its text


def _insert_once(
    rows: dict[tuple[int, str], dict[str, Any]],
    hashes: dict[tuple[int, str], str],
    now: datetime,
    defaults: dict[str, Any],
) -> set[tuple[int, str]]:
    """Inserts each key (with its request's hash, and its row's email id as the response) and, for each key
    inserted, its email row, in one statement; returns the keys inserted. A key stored already, or by a concurrent
    transaction, is left as it is with no email: the insert waits for that transaction and skips the key if it
    committed.

    A row goes without the columns that hold `defaults`' own values (the rows' defaults, _new_row()'s), which
    PostgreSQL takes from one record of them: most of a new email's columns hold defaults, and PostgreSQL reading
    them again from each row's JSON was most of the insert's time."""
    if not rows:
        return set()
    keys = [
        {"api_key_id": key_id, "key": key, "request_hash": hashes[key_id, key], "response": {"id": str(row["id"])}}
        for (key_id, key), row in sorted(rows.items(), key=lambda pair: pair[0])
    ]
    lean = [{name: value for name, value in Email.stored_row(row).items()
             if defaults.get(name, _NO_DEFAULT) is not value}
            for row in rows.values()]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            _insert_once_statement(),
            [
                _ONCE_STATUS,
                now,
                json.dumps(keys, ensure_ascii=False),
                json.dumps(defaults, default=str, ensure_ascii=False),
                json.dumps(lean, default=str, ensure_ascii=False),  # UUIDs and datetimes as PostgreSQL reads them
            ],
        )
        return {(key_id, key) for key_id, key in cursor.fetchall()}


_NO_DEFAULT = object()


@functools.cache
def _insert_once_statement() -> str:
    keys, emails = IdempotencyKey._meta.db_table, Email._meta.db_table
    columns = [connection.ops.quote_name(field.column) for field in Email._meta.concrete_fields]
    # As _insert_statement(): due by PostgreSQL's clock.
    values = [
        "COALESCE(send_at, statement_timestamp())" if column == '"next_attempt_at"' else column for column in columns
    ]
    return f"""WITH inserted AS (
                   INSERT INTO {keys} (api_key_id, key, request_hash, status_code, response, created_at)
                   SELECT api_key_id, key, request_hash, %s, response, %s
                     FROM jsonb_to_recordset(%s) AS k(api_key_id bigint, key text, request_hash text, response jsonb)
                    ORDER BY api_key_id, key
                       ON CONFLICT (api_key_id, key) DO NOTHING
                RETURNING api_key_id, key, (response ->> 'id')::uuid AS email_id
               ),
               emails AS (
                   INSERT INTO {emails} ({", ".join(columns)})
                   SELECT {", ".join(values)}
                     FROM jsonb_populate_recordset(jsonb_populate_record(NULL::{emails}, %s), %s)
                    WHERE id IN (SELECT email_id FROM inserted)
               )
               SELECT api_key_id, key FROM inserted"""  # noqa: S608 - table and column names are ours


def _replayed(item: OnceItem, stored: tuple[str, Any]) -> dict[str, Any]:
    """The answer to an item whose key was stored before: its email's id, or IdempotencyConflict for another
    request (a REST request's key among them: its hash is of another kind, and so never the same)."""
    request_hash, response = stored
    if request_hash != item.request_hash or not isinstance(response, dict) or "id" not in response:
        return {"refused": IdempotencyConflict()}
    return {"email_id": UUID(response["id"]), "replayed": True}


def _follower(item: OnceItem, leader: OnceItem, answer: dict[str, Any]) -> dict[str, Any]:
    """The answer to an item repeating an earlier item's key in the same call: the same, as a repeat."""
    if item.request_hash != leader.request_hash:
        return {"refused": IdempotencyConflict()}
    if "email_id" in answer:
        return {"email_id": answer["email_id"], "replayed": True}
    return answer  # refused as the first was: the same fields


def _insert(rows: list[dict[str, Any]]) -> None:
    """What bulk_create() does for new rows, as one statement that PostgreSQL reads as one JSON document:
    for 500 emails, Django's SQL compiler and PostgreSQL parsing 12,000 literals cost three times the
    insert itself (and for one email, the compiler is a sixth of a submit's time). Rows are keyed by
    column (Email's field attnames are its column names)."""
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _insert_statement(),
            # UUIDs and datetimes as PostgreSQL reads them
            [json.dumps([Email.stored_row(row) for row in rows], default=str, ensure_ascii=False)],
        )


@functools.cache
def _insert_statement() -> str:
    table = Email._meta.db_table
    columns = [connection.ops.quote_name(field.column) for field in Email._meta.concrete_fields]
    # Due by PostgreSQL's clock, as the workers' claims compare it: a web host whose clock runs ahead would
    # otherwise make every email wait that much.
    values = [
        "COALESCE(send_at, statement_timestamp())" if column == '"next_attempt_at"' else column for column in columns
    ]
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - the names are ours
        f"SELECT {', '.join(values)} FROM jsonb_populate_recordset(NULL::{table}, %s)"
    )


def _publish_when_due(rows: list[dict[str, Any]], now: datetime) -> None:
    """Enqueue after commit (a worker must find the rows). Emails due beyond one sweep interval are
    published by the sweep as their time comes, so no long countdown sits in a worker's memory."""
    by_delay: dict[float, list[UUID]] = {}
    for row in rows:
        delay = max(0.0, (row["next_attempt_at"] - now).total_seconds())
        if delay <= settings.MAIL_SWEEP_INTERVAL:
            by_delay.setdefault(delay, []).append(row["id"])
    for delay, ids in by_delay.items():
        if delay:
            transaction.on_commit(lambda ids=ids, delay=delay: queue.publish(ids, countdown=delay))
        else:  # the request need not wait for Celery's publish
            transaction.on_commit(lambda ids=ids: queue.publish_soon(ids))


def email_resend(*, email: Email) -> Email:
    """A new email with the same content (attachments included), whose resent_from is `email`. Raises
    InvalidFields when its key would refuse it now: revoked, or no longer allowed its sender."""
    if email.api_key is not None and email.api_key.revoked_at is not None:
        raise InvalidFields({"api_key": ["This email's API key is revoked: a revoked key sends nothing."]})
    return email_create(
        api_key=email.api_key,
        from_email=email.from_email,
        to=email.to,
        cc=email.cc,
        bcc=email.bcc,
        reply_to=email.reply_to,
        subject=email.subject,
        text=email.text,
        html=email.html,
        headers=email.headers,
        tags=email.tags,
        metadata=email.metadata,
        attachments=email.attachments,
        message_stream=email.message_stream,
        track_opens=email.track_opens,
        track_clicks=email.track_clicks,
        resent_from=email,
    )


def idempotent(
    *, api_key: ApiKey, key: str, request_hash: str, produce: Callable[[], tuple[int, Any]]
) -> tuple[int, Any, bool]:
    """Runs `produce` once per (api_key, key) and stores its (status, body); returns (status, body, replayed):
    a repeat gets the stored response with replayed True, a different request with the same key
    IdempotencyConflict.

    The key row is inserted first, in the same transaction as what `produce` writes: a concurrent
    duplicate blocks on the unique index until the first commits, then reads its response."""
    table = IdempotencyKey._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {table} (api_key_id, key, request_hash, status_code, response, created_at)
                VALUES (%s, %s, %s, 0, 'null', %s)
                ON CONFLICT (api_key_id, key) DO NOTHING RETURNING id""",  # noqa: S608 - our table name
            [api_key.id, key, request_hash, timezone.now()],
        )
        row = cursor.fetchone()
        if row is None:
            stored = IdempotencyKey.objects.get(api_key=api_key, key=key)
            if stored.request_hash != request_hash:
                raise IdempotencyConflict()
            return stored.status_code, stored.response, True
        status, body = produce()
        IdempotencyKey.objects.filter(id=row[0]).update(status_code=status, response=body)
    return status, body, False


def emails_retry_now(*, ids: list[UUID]) -> int:
    """FAILED emails get a fresh set of attempts, starting now. Returns how many."""
    now = timezone.now()
    with transaction.atomic():
        retried = list(
            Email.objects.filter(id__in=ids, status=Status.FAILED).select_for_update().values_list("id", flat=True)
        )
        Email.objects.filter(id__in=retried).update(
            status=Status.PENDING, attempts=0, next_attempt_at=now, last_error="", updated_at=now
        )
        transaction.on_commit(lambda: queue.publish(retried))
    return len(retried)
