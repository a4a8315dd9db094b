"""Re-encrypting what is stored with the newest key of MAIL_ENCRYPTION_KEYS (manage.py rotate_encryption_key):
values sealed with an older key, and values stored in clear before the keys were set.

Table by table in primary-key order, a batch per transaction: nothing is locked but the rows a batch rewrites, for
the moment it does. A row already sealed with the newest key is only read, so a run that was stopped is simply
run again. A row that changed between the batch's read and its write (its xmin moved: a worker claimed it,
retention erased it) is left as the change made it and read again at the end of its table."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connection, models

from emails.models import SEALED_TOGETHER, Email, IdempotencyKey, Webhook, WebhookMessage
from infra.encryption import (
    EncryptedJSONField,
    EncryptedTextField,
    enabled,
    open_json,
    open_text,
    sealed_with_newest,
)

BATCH = 500
AGAIN = 3  # times a table's changed rows are read again before the run reports them


class EncryptionNotConfigured(Exception):
    """Rotation was asked for without MAIL_ENCRYPTION_KEYS."""


@dataclass(frozen=True)
class _Sealed:
    """A value a table stores sealed: `name`d as its field, read with `read`, written with `write` ({new}: the new
    value's column), sealed by `store` (a JSON value: once opened and decoded)."""

    name: str
    read: str
    write: str
    is_json: bool
    store: Callable[[Any], Any]


def _columns(model: type[models.Model]) -> list[_Sealed]:
    quote = connection.ops.quote_name
    return [
        _Sealed(
            f.attname,
            f"t.{quote(f.column)}",
            f"{quote(f.column)} = {{new}}",
            isinstance(f, EncryptedJSONField),
            f.get_prep_value,
        )
        for f in model._meta.concrete_fields
        if isinstance(f, EncryptedTextField | EncryptedJSONField)
    ]


def _sealed_each(sealed: list[_Sealed], opened: dict[str, Any]) -> dict[str, Any]:
    return {s.name: s.store(opened[s.name]) for s in sealed}


def _email_relaid(sealed: list[_Sealed], opened: dict[str, Any]) -> dict[str, Any]:
    """An email's values as saving it now stores them: its subject, bodies and headers together in `content`, those
    of a row stored before (clear, or sealed one by one) included."""
    together = opened["content"] or {}
    return Email.stored_row(
        {
            **opened,
            **{name: opened[name] or together.get(name) or opened[name] for name in SEALED_TOGETHER},
            "content": {},
        }
    )


def _tables() -> list[tuple[type[models.Model], list[_Sealed], Callable]]:
    # A body's copy of its email's metadata (webhook_outbox.payload_sql), sealed as the email's column is.
    payload_metadata = _Sealed(
        "metadata",
        "t.payload #> '{data,metadata}'",
        "payload = jsonb_set(t.payload, '{{data,metadata}}', {new})",
        True,
        Email._meta.get_field("metadata").get_prep_value,
    )
    return [
        (Email, _columns(Email), _email_relaid),
        (IdempotencyKey, _columns(IdempotencyKey), _sealed_each),
        (Webhook, _columns(Webhook), _sealed_each),
        (WebhookMessage, [payload_metadata], _sealed_each),
    ]


@dataclass
class Progress:
    table: str
    read: int = 0
    rewritten: int = 0
    changed_meanwhile: int = 0  # rows a change made while their batch ran, left to the next run


def encryption_rotate(
    *, batch: int = BATCH, report: Callable[[Progress], None] = lambda progress: None
) -> list[Progress]:
    """Seals every stored value with the newest key. Raises EncryptionNotConfigured without MAIL_ENCRYPTION_KEYS,
    and UndecryptableError (naming the variable) for a value no key opens."""
    if not enabled():
        raise EncryptionNotConfigured(
            "MAIL_ENCRYPTION_KEYS is not set: set it to the new key, followed by the keys stored values may be "
            "sealed with."
        )
    done = []
    for model, sealed, store in _tables():
        progress = Progress(model._meta.db_table)
        changed = _rotate(model, sealed, store, progress, batch=batch, report=report)
        for _ in range(AGAIN):
            if not changed:
                break
            changed = _rotate(model, sealed, store, progress, batch=batch, report=report, only=changed)
        progress.changed_meanwhile = len(changed)
        report(progress)
        done.append(progress)
    return done


def _rotate(model, sealed: list[_Sealed], store, progress: Progress, *, batch: int, report, only=None) -> list[Any]:
    changed = []
    for rows in _batches(model, sealed, batch=batch, only=only):
        progress.read += len(rows)
        stale = [row for row in rows if not _current(model, row, sealed)]
        written = _write(model, sealed, [_resealed(row, sealed, store) for row in stale])
        progress.rewritten += len(written)
        changed += [row[0] for row in stale if row[0] not in written]
        report(progress)
    return changed


def _batches(model, sealed: list[_Sealed], *, batch: int, only: list[Any] | None) -> Iterator[list[tuple]]:
    table, pk = model._meta.db_table, connection.ops.quote_name(model._meta.pk.column)
    reads = ", ".join(s.read for s in sealed)
    last = None
    while True:
        where, params = ("TRUE", []) if last is None else (f"t.{pk} > %s", [last])
        if only is not None:
            where, params = f"{where} AND t.{pk} = ANY(%s)", [*params, only]
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT t.{pk}, t.xmin::text, {reads} FROM {table} AS t WHERE {where} ORDER BY t.{pk} LIMIT %s",  # noqa: S608 - ours
                [*params, batch],
            )
            rows = cursor.fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _decoded(value: Any, is_json: bool) -> Any:
    return json.loads(value) if is_json and isinstance(value, str) else value


def _current(model, row: tuple, sealed: list[_Sealed]) -> bool:
    """Whether a row is stored as saving it now would: each value empty or sealed with the newest key (an email's
    subject, bodies and headers in `content`)."""
    values = {s.name: _decoded(value, s.is_json) for value, s in zip(row[2:], sealed, strict=True)}
    if model is Email and any(values[name] for name in SEALED_TOGETHER):
        return False
    return all(not value or sealed_with_newest(value) for value in values.values())


def _resealed(row: tuple, sealed: list[_Sealed], store) -> tuple:
    opened = {
        s.name: open_json(_decoded(value, True)) if s.is_json else open_text(value)
        for value, s in zip(row[2:], sealed, strict=True)
    }
    stored = store(sealed, opened)
    return (row[0], row[1], *(json.dumps(stored[s.name]) if s.is_json else stored[s.name] for s in sealed))


def _write(model, sealed: list[_Sealed], rows: list[tuple]) -> set[Any]:
    """Writes each row whose xmin is still the one read; returns their primary keys."""
    if not rows:
        return set()
    table, pk = model._meta.db_table, connection.ops.quote_name(model._meta.pk.column)
    pk_type = model._meta.pk.db_type(connection)
    names = [f"c{i}" for i in range(len(sealed))]
    casts = ", ".join(f"%s::{'jsonb' if s.is_json else 'text'}" for s in sealed)
    values = ", ".join([f"(%s::{pk_type}, %s::xid, {casts})"] * len(rows))
    assignments = ", ".join(s.write.format(new=f"v.{name}") for s, name in zip(sealed, names, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {table} AS t SET {assignments}
                  FROM (VALUES {values}) AS v (pk, xmin, {", ".join(names)})
                 WHERE t.{pk} = v.pk AND t.xmin = v.xmin
             RETURNING t.{pk}""",  # noqa: S608 - names and placeholders are ours
            [value for row in rows for value in row],
        )
        return {row[0] for row in cursor.fetchall()}
