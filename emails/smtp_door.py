"""The SMTP submission door (`manage.py smtpd`): aiosmtpd speaks SMTP, this handler turns a session into
emails. AUTH checks the password as an API key, each message is read (emails.smtp_message), validated as
POST /api/v1/emails validates and stored by the accepting service; the outcome is mapped to a reply in
smtp_reply() alone. Messages that concurrent sessions finish while a commit is under way are stored together
in the next (GroupCommit): one statement and one commit for many, each session still answered on its own
and only once its row is committed.

Nothing here touches the database on the event loop: a lookup or an insert waits for PostgreSQL (up to
MAIL_DATABASE_TIMEOUT), and every other session would wait with it. They run in a small thread pool, each
call between close_old_connections() as a request is; reading a message runs there too, so that a large one
never holds up the other sessions."""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
import re
from base64 import b64decode
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from uuid import UUID

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session
from django.conf import settings
from django.db import close_old_connections, transaction

from emails.authentication import valid_api_key
from emails.errors import SENDER_NOT_ALLOWED, InvalidFields, TooLarge
from emails.exceptions import DATABASE_ERRORS
from emails.models import ApiKey
from emails.rendering import RenderUnavailable
from emails.services import email_create_batch, email_fields
from emails.services.api_keys import api_key_may_send_as
from emails.smtp_message import UnparsableMessage, message_fields

log = logging.getLogger(__name__)

T = TypeVar("T")

# Each thread holds a database connection; the messages waiting for a commit go in one statement, so a few
# threads keep up with many sessions.
DATABASE_THREADS = 4
MAX_REPLY_TEXT = 400  # a reply line stays well within RFC 5321's 512 octets

INVALID_KEY = "535 5.7.8 Invalid API key: unknown, or revoked. Send an API key as the AUTH password."
AUTH_UNAVAILABLE = "454 4.7.0 The API key cannot be checked right now; try again shortly."
KEY_REVOKED = "550 5.7.8 This session's API key was revoked: a revoked key sends nothing."
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients: at most {limit} per message."
UNAVAILABLE = "451 4.3.0 The service is unavailable right now; try again shortly."

_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]+")


class KeyRevoked(Exception):
    """The session's API key was revoked after it authenticated."""


class SubmissionHandler:
    """aiosmtpd's handler (its documented hooks: handle_RCPT, handle_DATA, auth_PLAIN, auth_LOGIN).

    A session that authenticated holds its key as session.auth_data; the key is looked up again (through the
    same short cache as the API) for each message, so a revoked key stops sending on open connections too."""

    def __init__(self, *, threads: int = DATABASE_THREADS) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="smtp-db")
        self.in_flight = 0  # messages being stored: a stop waits for them (the loop's thread only)
        self.commits = GroupCommit(self._off_loop)

    async def _off_loop(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, _as_a_request, function, *args)

    # AUTH: the password is an API key, any user name.

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            response = await server.challenge_auth("")
            if response is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                response = b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        parts = response.split(b"\x00")  # authzid NUL authcid NUL passwd (RFC 4616)
        if len(parts) != 3:
            await server.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._authenticate(server, parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            user = await server.challenge_auth(SMTP.AuthLoginUsernameChallenge)
            if user is MISSING:
                return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._authenticate(server, password)

    async def _authenticate(self, server: SMTP, password: bytes) -> AuthResult:
        try:
            key = password.decode("ascii")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False, message=INVALID_KEY)
        try:
            api_key = await self._off_loop(valid_api_key, key)
        except DATABASE_ERRORS as exc:
            log.error("SMTP AUTH: database unavailable (%s): answered 454", type(exc).__name__)
            return AuthResult(success=False, handled=False, message=AUTH_UNAVAILABLE)
        if api_key is None:
            log.info("SMTP AUTH refused from %s", _peer_host(server.session))
            return AuthResult(success=False, handled=False, message=INVALID_KEY)
        log.info("SMTP AUTH as key %s", api_key.pk)
        # The key itself, not the row: each message looks it up again, and a revoked one stops sending.
        return AuthResult(success=True, auth_data=key)

    # The envelope and the message.

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= settings.MAIL_MAX_RECIPIENTS:
            return TOO_MANY_RECIPIENTS.format(limit=settings.MAIL_MAX_RECIPIENTS)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.in_flight += 1
        try:
            api_key, fields = await self._off_loop(
                _read, session.auth_data, envelope.mail_from, envelope.content, envelope.rcpt_tos
            )
            email_id = await self.commits.store(api_key, fields, len(envelope.content))
        except Exception as exc:  # every outcome becomes a reply, in smtp_reply()
            reply = smtp_reply(exc)
            log.info("SMTP message refused: %s (%s)", reply[:9], type(exc).__name__)
            return reply
        finally:
            self.in_flight -= 1
        log.info("email %s submitted over SMTP as key %s", email_id, api_key.pk)
        return f"250 2.0.0 Accepted as email {email_id}"


class GroupCommit:
    """Stores the messages of concurrent sessions together: while one INSERT commits, the messages read meanwhile
    wait, then go in the next, one statement and one commit for all of them (email_create_batch, per API key).
    Each session gets its own outcome: its email's id once that commit is done, or its own refusal; when the
    commit fails, every session in it gets what it raised (the client keeps its message and retries)."""

    def __init__(self, off_loop: Callable[..., Any]) -> None:
        self._off_loop = off_loop
        self.waiting: list[tuple[ApiKey, dict[str, Any], int, asyncio.Future]] = []
        self.committer: asyncio.Task | None = None

    async def store(self, api_key: ApiKey, fields: dict[str, Any], size: int) -> UUID:
        """The id of the email stored from `fields` (validated), once committed; raises what smtp_reply() maps."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((api_key, fields, size, future))
        if self.committer is None:
            self.committer = asyncio.create_task(self._commit_while_waiting())
        return await future

    async def _commit_while_waiting(self) -> None:
        try:
            while self.waiting:
                group = self._next_group()
                try:
                    outcomes = await self._off_loop(_store_together, [(key, fields) for key, fields, _, _ in group])
                except Exception as exc:  # a statement of all of them: none was stored
                    outcomes = [exc] * len(group)
                for (*_, future), outcome in zip(group, outcomes, strict=True):
                    if future.done():  # its session is gone (the connection closed): nobody to answer
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self.committer = None

    def _next_group(self) -> list[tuple[ApiKey, dict[str, Any], int, asyncio.Future]]:
        """The oldest waiting messages, as many as one batch request may carry in bytes (one at least): a
        statement holds them all at once, as one JSON document."""
        taken, size = 0, 0
        for _, _, message_size, _ in self.waiting:
            if taken and size + message_size > settings.MAIL_MAX_REQUEST_BYTES:
                break
            taken, size = taken + 1, size + message_size
        group, self.waiting = self.waiting[:taken], self.waiting[taken:]
        return group


def _as_a_request(function: Callable[..., T], *args: Any) -> T:
    """Runs function in a pool thread as Django runs a request: connections past their age, or broken by an
    error, are closed before and after."""
    close_old_connections()
    try:
        return function(*args)
    finally:
        close_old_connections()


def _read(
    key: str, envelope_sender: str, message: bytes, envelope_recipients: list[str]
) -> tuple[ApiKey, dict[str, Any]]:
    """(API key, fields validated as POST /api/v1/emails validates them) of the message: everything but
    storing it. Raises what smtp_reply() maps."""
    api_key: ApiKey | None = valid_api_key(key)
    if api_key is None:
        raise KeyRevoked
    # The service checks From and the Sender-like headers; the envelope's sender only this door sees (the
    # null sender names nobody: aiosmtpd gives it as "<>").
    if envelope_sender not in ("", "<>") and not api_key_may_send_as(api_key, envelope_sender):
        message = "This API key may not send with the envelope sender (MAIL FROM) it gave."
        raise InvalidFields({"from": [message]}, code=SENDER_NOT_ALLOWED)
    fields = message_fields(message, envelope_recipients)
    # The API's names (`from`).
    return api_key, email_fields({"from": fields.pop("from_email"), **fields})


def _store_together(messages: list[tuple[ApiKey, dict[str, Any]]]) -> list[UUID | InvalidFields | TooLarge]:
    """Stores the messages (API key, validated fields) in one transaction, a statement per API key among them;
    returns, in order, each one's email id, or why the service refused it. Raises what the database raises
    (nothing is stored then)."""
    by_key: dict[int, list[int]] = {}
    for index, (api_key, _) in enumerate(messages):
        by_key.setdefault(api_key.pk, []).append(index)
    outcomes: list[UUID | InvalidFields | TooLarge] = [None] * len(messages)  # type: ignore[list-item]
    # Several keys: one commit still (each batch's own transaction becomes a savepoint in it).
    with transaction.atomic() if len(by_key) > 1 else contextlib.nullcontext():
        for indexes in by_key.values():
            api_key = messages[indexes[0]][0]
            results = email_create_batch(api_key=api_key, items=[messages[index][1] for index in indexes])
            for index, result in zip(indexes, results, strict=True):
                outcomes[index] = result["email"]["id"] if "email" in result else result["refused"]
    return outcomes


def smtp_reply(exc: BaseException) -> str:
    """The SMTP reply for what storing a message raised: every error of the accepting service, mapped here
    only. Field names and the service's reasons, never the message's content."""
    if isinstance(exc, InvalidFields):
        fields = [str(name) for name in exc.errors] or ["message"]
        code = "550 5.7.1" if exc.code == SENDER_NOT_ALLOWED else "550 5.6.0"
        return _reply(code, f"Invalid {', '.join(fields)}: {_first_message(exc.errors)}")
    if isinstance(exc, TooLarge):
        return _reply("552 5.3.4", exc.message)
    if isinstance(exc, UnparsableMessage):
        return _reply("554 5.6.0", str(exc))
    if isinstance(exc, KeyRevoked):
        return KEY_REVOKED
    if isinstance(exc, (*DATABASE_ERRORS, RenderUnavailable)):
        log.error("unavailable (%s): answered 451", type(exc).__name__)
        return UNAVAILABLE
    # A bug of ours: the client keeps the message and retries; the type only, as a message may quote content.
    log.error("SMTP message failed (%s): answered 451", type(exc).__name__)
    return UNAVAILABLE


def _first_message(errors: Any) -> str:
    """The first message in an InvalidFields' errors (nested as a list's or an object's errors nest)."""
    if isinstance(errors, dict):
        return next((_first_message(value) for value in errors.values() if value), "")
    if isinstance(errors, list):
        return next((_first_message(value) for value in errors if value), "")
    return str(errors)


def _reply(code: str, text: str) -> str:
    """One reply line: printable ASCII (SMTP replies are), bounded."""
    text = _NOT_PRINTABLE.sub("?", text).strip()
    if len(text) > MAX_REPLY_TEXT:
        text = text[: MAX_REPLY_TEXT - 1] + "~"
    return f"{code} {text}"


def _peer_host(session: Session | None) -> str:
    peer = getattr(session, "peer", None)
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"
