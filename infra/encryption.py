"""Encryption at rest of what clients hand over (MAIL_ENCRYPTION_KEYS): the model fields that hold an email's
content, and the functions that paths writing or reading those columns in SQL of their own call.

Values are sealed with cryptography's MultiFernet (the newest key seals, every key opens). A stored value says what
it is, since rows written before the keys were set, or with them unset, are clear:
- "enc:f:<Fernet token>" is sealed;
- "enc:z:<Fernet token>" is sealed, compressed (zstd) before: a field made with compress=True, for bodies, which
  PostgreSQL compresses when they are clear and cannot once they are sealed;
- "enc:c:<text>" is clear text that itself begins with "enc:", escaped so that it is never taken for a token;
- anything else is clear.
Empty values ("", {}, [], None) are stored as they are: that a field is empty is all they tell.

A JSON column holds a sealed value as a JSON string: the clear values of these columns are objects or lists, so
a string is never ambiguous there (one beginning with "enc:" is escaped as text is)."""

from __future__ import annotations

import functools
import json
import threading
from typing import Any

import zstandard
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

MARK = "enc:"
SEALED = "enc:f:"
COMPRESSED = "enc:z:"
ESCAPED = "enc:c:"
VARIABLE = "MAIL_ENCRYPTION_KEYS"


class UndecryptableError(Exception):
    """A stored value that no key of MAIL_ENCRYPTION_KEYS opens: the keys changed without their rotation, or
    the variable is unset. Never shown as content."""


@functools.cache
def _fernets(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    return MultiFernet([Fernet(key) for key in keys]), Fernet(keys[0])


def _keys() -> tuple[str, ...]:
    return tuple(settings.MAIL_ENCRYPTION_KEYS)


def enabled() -> bool:
    return bool(settings.MAIL_ENCRYPTION_KEYS)


# Below this, compressing saves too little to pay for itself.
COMPRESS_FROM_BYTES = 1024
# zstd's contexts are not to be shared between threads (gunicorn's, the workers' send threads): one each.
_zstd = threading.local()


def _compressed(data: bytes) -> bytes:
    if not hasattr(_zstd, "compressor"):
        _zstd.compressor = zstandard.ZstdCompressor(level=1)
    return _zstd.compressor.compress(data)


def _decompressed(data: bytes) -> bytes:
    if not hasattr(_zstd, "decompressor"):
        _zstd.decompressor = zstandard.ZstdDecompressor()
    return _zstd.decompressor.decompress(data)  # the frame states its size; the token's HMAC vouches for it


def seal_text(value: str, *, compress: bool = False) -> str:
    """What to store for `value`: sealed when keys are set (compressed first if asked and worth it), else clear
    (escaped if it could be taken for a stored form)."""
    if not value:
        return value
    keys = _keys()
    if not keys:
        return ESCAPED + value if value.startswith(MARK) else value
    data, mark = value.encode(), SEALED
    if compress and len(data) >= COMPRESS_FROM_BYTES:
        data, mark = _compressed(data), COMPRESSED
    return mark + _fernets(keys)[0].encrypt(data).decode("ascii")


def open_text(stored: str) -> str:
    """The value `stored` holds. Raises UndecryptableError for a sealed value no key opens."""
    if not stored or not stored.startswith(MARK):
        return stored
    if stored.startswith(ESCAPED):
        return stored[len(ESCAPED) :]
    if not stored.startswith((SEALED, COMPRESSED)):
        raise UndecryptableError(f"A stored value is marked {stored[:6]!r}, which is neither sealed nor escaped.")
    keys = _keys()
    if not keys:
        raise UndecryptableError(
            f"A stored value is encrypted, and {VARIABLE} is not set: set it to the key(s) it was encrypted with."
        )
    compressed = stored.startswith(COMPRESSED)
    try:
        data = _fernets(keys)[0].decrypt(stored[len(COMPRESSED if compressed else SEALED) :].encode("ascii"))
        return (_decompressed(data) if compressed else data).decode()
    except (InvalidToken, UnicodeError, zstandard.ZstdError):
        raise UndecryptableError(
            f"A stored value cannot be decrypted with any key of {VARIABLE}: the key it was encrypted with is "
            "missing from it (run `manage.py rotate_encryption_key` before removing a key)."
        ) from None


def seal_json(value: Any, *, compress: bool = False) -> Any:
    """What to store in a JSON column for `value`: a sealed JSON string when keys are set (an empty value stays
    as it is), else `value` itself."""
    if not value:
        return value
    if _keys():
        return seal_text(json.dumps(value, separators=(",", ":")), compress=compress)  # ASCII: the fastest encoder
    return seal_text(value) if isinstance(value, str) else value


def open_json(stored: Any) -> Any:
    """The value a JSON column's `stored` (as decoded from JSON) holds."""
    if not isinstance(stored, str) or not stored.startswith(MARK):
        return stored
    if stored.startswith(ESCAPED):
        return open_text(stored)
    return json.loads(open_text(stored))


def sealed_with_newest(stored: Any) -> bool:
    """Whether `stored` (a column's value, a JSON column's decoded) is sealed with the newest key already: what
    rotation leaves as it is."""
    keys = _keys()
    if not keys or not isinstance(stored, str) or not stored.startswith((SEALED, COMPRESSED)):
        return False
    try:
        _fernets(keys)[1].decrypt(stored[len(SEALED) :].encode("ascii"))  # both marks are as long
    except InvalidToken:
        return False
    return True


class _Sealing:
    """What the two fields share: compress=True compresses values of a kilobyte and more before sealing them."""

    def __init__(self, *args, compress: bool = False, **kwargs) -> None:
        self.compress = compress
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if self.compress:
            kwargs["compress"] = True
        return name, path, args, kwargs


class EncryptedTextField(_Sealing, models.TextField):
    """Text sealed with MAIL_ENCRYPTION_KEYS when they are set. Lookups compare the stored form: filter on
    these columns for emptiness only."""

    def get_prep_value(self, value):
        return seal_text(super().get_prep_value(value), compress=self.compress)

    def from_db_value(self, value, expression, connection):
        return value if value is None else open_text(value)


class EncryptedJSONField(_Sealing, models.JSONField):
    """JSON sealed with MAIL_ENCRYPTION_KEYS when they are set (stored as a JSON string). Key lookups see the
    stored form: filter on these columns for emptiness only."""

    def get_prep_value(self, value):
        return seal_json(super().get_prep_value(value), compress=self.compress)

    def from_db_value(self, value, expression, connection):
        return open_json(super().from_db_value(value, expression, connection))


@functools.cache
def _sealed_fields(model: type[models.Model]) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (field.attname, field.get_prep_value)
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField | EncryptedJSONField)
    )


def as_stored(model: type[models.Model], row: dict[str, Any]) -> dict[str, Any]:
    """`row` (some of a model's columns, by attname) with the values of its sealed fields as stored: for a path
    that writes rows in SQL of its own, which the fields' own conversion never sees."""
    return {**row, **{name: store(row[name]) for name, store in _sealed_fields(model) if name in row}}
