"""The Redis stream door (`manage.py consume_stream`): entries read from MAIL_STREAM in the consumer group
"mailservice", a batch at a time, stored by the accepting service in one transaction, each answered on
"<MAIL_STREAM>:results" and acknowledged in the same step.

An entry is {api_key, email (JSON, as POST /api/v1/emails takes it), idempotency_key (optional)}. Its
idempotency key, stored as the REST API stores its own but in namespaces of the stream's ("stream:" + the
key given, else "stream-entry:" + the entry's id), makes an entry read twice (redelivered, claimed from a
consumer that died after its commit, or sent again by its producer) one email. Every outcome becomes a result
in stream_result() alone; a database or render process that cannot be reached is no outcome: nothing is
answered or acknowledged, and the same entries are read again once it is back.

Logs name entry ids and email ids, never an entry's content (addresses, bodies, keys)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import redis
from django.conf import settings
from django.db import close_old_connections
from rest_framework.utils.json import strict_constant

from emails.authentication import INVALID_KEY, valid_api_key
from emails.errors import IdempotencyConflict, InvalidFields, TooLarge
from emails.exceptions import DATABASE_ERRORS
from emails.models import ApiKey
from emails.parsers import MAX_JSON_DEPTH, nested_deeper_than
from emails.rendering import RenderUnavailable
from emails.services import OnceItem, email_create_batch_once, email_fields

log = logging.getLogger(__name__)

GROUP = "mailservice"
# Entries per read, and so per transaction. Redis cannot bound a read by bytes: a batch of the largest
# entries holds this many times MAIL_MAX_REQUEST_BYTES in memory.
READ_COUNT = 100
# How long a read waits for new entries: a stop is noticed within this, and it stays below the Redis
# client's socket timeout (infra.redis).
BLOCK_SECONDS = 1.0
# Waits between retries while the database (or Redis) cannot be reached. Each retry reads the entries again,
# which keeps them this consumer's: another consumer claims them only once this one stops retrying.
BACKOFF_FIRST_SECONDS, BACKOFF_MAX_SECONDS = 0.5, 5.0
# A consumer of the group with nothing pending and no read for this long is forgotten (each process reads
# under a name of its own, so every restart leaves one behind).
FORGET_CONSUMER_SECONDS = 3600

ENTRY_KEY_PREFIX = "stream-entry:"
GIVEN_KEY_PREFIX = "stream:"
MAX_IDEMPOTENCY_KEY_LENGTH = 255 - len(GIVEN_KEY_PREFIX)  # IdempotencyKey.key holds 255 with the prefix
MAX_API_KEY_BYTES = 256  # ours are far shorter: a longer one is refused unhashed
ENTRY_FIELDS = (b"api_key", b"email", b"idempotency_key")
MAX_NAME_SHOWN = 100

DELETED = "This entry was deleted from the stream before it was read."
UNKNOWN_FIELD = "Unknown field: an entry has api_key, email and, optionally, idempotency_key."
REQUIRED = "This field is required."
IDEMPOTENCY_KEY_REUSED = "This idempotency_key was used before with a different email (or API key's request)."
INTERNAL_ERROR = "This entry could not be stored: an error of the service's own, logged with the entry's id."

# Answers and acknowledges entries in one step, each only while it is still pending in the group: an entry
# claimed by another consumer and answered there already (a slow consumer's, not a dead one's) gets no second
# result. XADD comes before XACK: a refused write (Redis out of memory) stops the script with that entry
# still pending. KEYS: the stream, its results; ARGV: group, maxlen, then (entry id, field, value) per entry.
ANSWER_SCRIPT = """
local answered = 0
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  if #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1) > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'entry', id, ARGV[i + 1], ARGV[i + 2])
    redis.call('XACK', KEYS[1], ARGV[1], id)
    answered = answered + 1
  end
end
return answered
"""

# Deletes a consumer only if nothing is pending to it (deleting one destroys its pending list).
# KEYS: the stream; ARGV: group, consumer.
FORGET_SCRIPT = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""


class Unavailable(Exception):
    """The database, a render process or Redis cannot be reached: the entries in hand are read again later."""


@dataclass(frozen=True)
class Entry:
    id: str
    fields: dict[bytes, bytes] | None  # None: deleted from the stream while pending


class EntryRefused(InvalidFields):
    """An entry that is no email: its fields, as the door reads them, named with what is wrong."""


def stream_result(outcome: UUID | BaseException) -> tuple[str, str]:
    """The result of an entry, as (field, value) of its entry on the results stream: its email's id, or its
    errors as the API's 400 names them. Every outcome of the accepting service is mapped here only."""
    if isinstance(outcome, UUID):
        return "email_id", str(outcome)
    if isinstance(outcome, InvalidFields):  # EntryRefused among them
        errors: dict[Any, Any] = outcome.errors
    elif isinstance(outcome, TooLarge):
        errors = {"size": [outcome.message]}  # as POST /api/v1/emails/batch answers an item
    elif isinstance(outcome, IdempotencyConflict):
        errors = {"idempotency_key": [IDEMPOTENCY_KEY_REUSED]}
    else:  # a bug of ours: logged by the caller with the entry's id
        errors = {"entry": [INTERNAL_ERROR]}
    return "errors", json.dumps(errors, ensure_ascii=False)


def read_entry(entry: Entry) -> OnceItem:
    """The item the accepting service stores for an entry; raises EntryRefused (or InvalidFields, from the
    email's validation). Every field is bounded before it is decoded or parsed, the key checked first."""
    fields = entry.fields
    if fields is None:
        raise EntryRefused({"entry": [DELETED]})
    unknown = [name for name in fields if name not in ENTRY_FIELDS]
    if unknown:
        raise EntryRefused({_shown(name): [UNKNOWN_FIELD] for name in unknown[:10]})
    api_key = _api_key(fields.get(b"api_key"))
    key = _idempotency_key(entry.id, fields.get(b"idempotency_key"))
    body = fields.get(b"email")
    if body is None:
        raise EntryRefused({"email": [REQUIRED]})
    data = _json(body)
    validated = email_fields(data)
    canonical = json.dumps(["stream", data], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    request_hash = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    return OnceItem(api_key=api_key, key=key, request_hash=request_hash, fields=validated)


def _api_key(value: bytes | None) -> ApiKey:
    if value is None:
        raise EntryRefused({"api_key": [REQUIRED]})
    api_key = None
    if len(value) <= MAX_API_KEY_BYTES and value.isascii():
        api_key = valid_api_key(value.decode("ascii"))  # the database's errors go up: no refusal
    if api_key is None:
        raise EntryRefused({"api_key": [INVALID_KEY]})
    return api_key


def _idempotency_key(entry_id: str, value: bytes | None) -> str:
    if value is None:
        return ENTRY_KEY_PREFIX + entry_id
    message = f"Between 1 and {MAX_IDEMPOTENCY_KEY_LENGTH} characters of UTF-8 text, without NUL."
    if not value or len(value) > 4 * MAX_IDEMPOTENCY_KEY_LENGTH or b"\x00" in value:
        raise EntryRefused({"idempotency_key": [message]})
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise EntryRefused({"idempotency_key": [message]}) from None
    if len(text) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise EntryRefused({"idempotency_key": [message]})
    return GIVEN_KEY_PREFIX + text


def _json(body: bytes) -> Any:
    limit = settings.MAIL_MAX_REQUEST_BYTES
    if len(body) > limit:
        raise EntryRefused({"email": [f"At most {limit} bytes of JSON; this one is {len(body)}."]})
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise EntryRefused({"email": ["Not JSON: not UTF-8 text."]}) from None
    if nested_deeper_than(body, MAX_JSON_DEPTH):
        raise EntryRefused({"email": [f"Not JSON this service reads: nested deeper than {MAX_JSON_DEPTH} levels."]})
    try:
        return json.loads(text, parse_constant=strict_constant)
    except ValueError as exc:  # the parser's message gives a position, never the text
        raise EntryRefused({"email": [f"Not JSON: {exc}"]}) from None
    except RecursionError:  # cannot happen below MAX_JSON_DEPTH
        raise EntryRefused({"email": [f"Not JSON this service reads: nested deeper than {MAX_JSON_DEPTH}."]}) from None


def _shown(name: bytes) -> str:
    return name[:MAX_NAME_SHOWN].decode("utf-8", "replace")


class StreamDoor:
    """Reads and answers the stream until stop() (a signal handler may call it): the batch in hand is answered
    and acknowledged first.

    Each pass reads, in this order: entries pending to this consumer that a failed pass left (from "0"), entries
    idle for MAIL_STREAM_CLAIM_IDLE elsewhere (XAUTOCLAIM, every quarter of that), else new ones (">")."""

    def __init__(self, client: redis.Redis, *, stream: str, consumer: str) -> None:
        self.redis = client
        self.stream = stream
        self.results = f"{stream}:results"
        self.consumer = consumer
        self.claim_idle_ms = max(1, int(settings.MAIL_STREAM_CLAIM_IDLE * 1000))
        self.claim_every = settings.MAIL_STREAM_CLAIM_IDLE / 4
        self.answer_script = client.register_script(ANSWER_SCRIPT)
        self.forget_script = client.register_script(FORGET_SCRIPT)
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True

    def run(self) -> None:
        backlog: str | None = "0"  # what a run under this name left pending comes first
        claim_from, next_claim = "0-0", 0.0
        backoff = 0.0
        group_made = False
        while not self.stopping:
            try:
                if not group_made:
                    self._make_group()
                    group_made = True
                if backlog is not None:
                    entries = self._read(backlog)
                    if not entries:
                        backlog = None
                        continue
                    backlog = entries[-1].id
                elif time.monotonic() >= next_claim:
                    claim_from, entries = self._claim(claim_from)
                    if claim_from == "0-0":  # the whole pending list was scanned
                        next_claim = time.monotonic() + self.claim_every
                        self._tidy()
                else:
                    wait = min(BLOCK_SECONDS, max(0.001, next_claim - time.monotonic()))
                    entries = self._read(">", block=wait)
                if entries:
                    self.answer(entries)
                backoff = 0.0
            except (Unavailable, redis.ConnectionError, redis.TimeoutError) as exc:
                backlog = "0"  # the entries in hand are still pending to this consumer
                backoff = min(BACKOFF_MAX_SECONDS, max(BACKOFF_FIRST_SECONDS, backoff * 2))
                log.warning("stream: unavailable (%s); reading again in %.1f s", _why(exc), backoff)
                self._pause(backoff)
            except redis.ResponseError as exc:
                backlog = "0"
                if "NOGROUP" in str(exc):  # the stream or the group was deleted: made again
                    group_made = False
                    continue
                backoff = min(BACKOFF_MAX_SECONDS, max(BACKOFF_FIRST_SECONDS, backoff * 2))
                log.error("stream: Redis refused a command (%s); again in %.1f s", str(exc)[:200], backoff)
                self._pause(backoff)
            except Exception as exc:  # a bug of ours outside any entry: logged, and the process goes on
                backlog = "0"
                backoff = min(BACKOFF_MAX_SECONDS, max(BACKOFF_FIRST_SECONDS, backoff * 2))
                log.error("stream: pass failed (%s); again in %.1f s", type(exc).__name__, backoff)
                self._pause(backoff)
        log.info("stream: stopped")

    def answer(self, entries: list[Entry]) -> None:
        """Stores the entries' emails, then answers and acknowledges every entry; raises Unavailable (nothing
        answered) when the database or a render process cannot be reached."""
        started = time.monotonic()
        answers = self._outcomes(entries)
        args: list[str] = [GROUP, str(settings.MAIL_STREAM_RESULTS_MAXLEN)]
        for entry, outcome in zip(entries, answers, strict=True):
            args += [entry.id, *stream_result(outcome)]
        self.answer_script(keys=[self.stream, self.results], args=args)
        stored = sum(isinstance(outcome, UUID) for outcome in answers)
        log.info("stream: entries %s to %s: %d answered, %d with an email, %d refused (%.0f ms)", entries[0].id,
                 entries[-1].id, len(entries), stored, len(entries) - stored,
                 (time.monotonic() - started) * 1000)  # fmt: skip

    def _outcomes(self, entries: list[Entry]) -> list[UUID | BaseException]:
        """Each entry's email id or refusal, in order. A batch that fails on a bug of ours is tried an entry at
        a time, so that one entry that triggers it is answered with an error and does not hold back the rest."""
        close_old_connections()  # as around a request: a connection broken by an outage is replaced
        try:
            return self._stored(entries)
        except (*DATABASE_ERRORS, RenderUnavailable) as exc:
            raise Unavailable(type(exc).__name__) from exc
        except Exception as exc:
            log.error("stream: entries %s to %s failed together (%s); one at a time now", entries[0].id,
                      entries[-1].id, type(exc).__name__)  # fmt: skip
            return [self._alone(entry) for entry in entries]
        finally:
            close_old_connections()

    def _alone(self, entry: Entry) -> UUID | BaseException:
        try:
            return self._stored([entry])[0]
        except (*DATABASE_ERRORS, RenderUnavailable) as exc:
            raise Unavailable(type(exc).__name__) from exc
        except Exception as exc:
            log.error("stream: entry %s failed (%s): answered with an error", entry.id, type(exc).__name__)
            return exc
        finally:
            close_old_connections()

    def _stored(self, entries: list[Entry]) -> list[UUID | BaseException]:
        outcomes: list[UUID | BaseException | None] = []
        items: list[OnceItem] = []
        for entry in entries:
            try:
                items.append(read_entry(entry))
                outcomes.append(None)  # the service's, below
            except InvalidFields as exc:
                log.info("stream: entry %s refused (%s)", entry.id, type(exc).__name__)
                outcomes.append(exc)
        stored = iter(email_create_batch_once(items))
        answers: list[UUID | BaseException] = []
        for entry, outcome in zip(entries, outcomes, strict=True):
            if outcome is None:
                result = next(stored)
                outcome = result.get("email_id") or result["refused"]
                if isinstance(outcome, UUID):
                    log.debug("stream: entry %s is email %s", entry.id, outcome)
                else:
                    log.info("stream: entry %s refused (%s)", entry.id, type(outcome).__name__)
            answers.append(outcome)
        return answers

    # Redis

    def _make_group(self) -> None:
        try:
            # From the stream's start: entries added before the first consumer ran are read too.
            self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        log.info("stream: reading %s in group %s as %s", self.stream, GROUP, self.consumer)

    def _read(self, after: str, *, block: float | None = None) -> list[Entry]:
        reply = self.redis.xreadgroup(
            GROUP,
            self.consumer,
            {self.stream: after},
            count=READ_COUNT,
            block=None if block is None else max(1, int(block * 1000)),
        )
        return [_entry(entry_id, fields) for _, entries in reply or [] for entry_id, fields in entries]

    def _claim(self, start: str) -> tuple[str, list[Entry]]:
        reply = self.redis.xautoclaim(
            self.stream, GROUP, self.consumer, self.claim_idle_ms, start_id=start, count=READ_COUNT
        )
        next_start, claimed = _text(reply[0]), reply[1]
        if len(reply) > 2 and reply[2]:  # pending, but deleted from the stream: XAUTOCLAIM dropped them
            log.warning("stream: %d pending entries were deleted before they were read, first %s", len(reply[2]),
                        _text(reply[2][0]))  # fmt: skip
        entries = [_entry(entry_id, fields) for entry_id, fields in claimed]
        if entries:
            log.info("stream: claimed %d entries idle elsewhere, %s to %s", len(entries), entries[0].id,
                     entries[-1].id)  # fmt: skip
        return next_start, entries

    def _tidy(self) -> None:
        """Trims what every group of the stream is done with, and forgets consumers long gone: without it the
        stream (in the Redis that is also Celery's broker, where nothing is evicted) grows with every entry."""
        floor: tuple[int, int] | None = None
        for group in self.redis.xinfo_groups(self.stream):
            done = _id(group["last-delivered-id"])
            if group["pending"]:
                done = min(done, _id(self.redis.xpending(self.stream, group["name"])["min"]))
            floor = done if floor is None else min(floor, done)
        if floor is not None and floor > (0, 0):
            # Entries below the floor were read by every group and are pending in none. "~": whole nodes only.
            self.redis.xtrim(self.stream, minid=f"{floor[0]}-{floor[1]}", approximate=True)
        for consumer in self.redis.xinfo_consumers(self.stream, GROUP):
            name = _text(consumer["name"])
            if name != self.consumer and not consumer["pending"] and consumer["idle"] > FORGET_CONSUMER_SECONDS * 1000:
                self.forget_script(keys=[self.stream], args=[GROUP, name])

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes] | None) -> Entry:
    return Entry(id=_text(entry_id), fields=fields or None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id(value: bytes | str) -> tuple[int, int]:
    milliseconds, _, sequence = _text(value).partition("-")
    return int(milliseconds), int(sequence or 0)


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, Unavailable) else type(exc).__name__
