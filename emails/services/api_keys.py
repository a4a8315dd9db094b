"""API keys: created here, shown once, stored as a hash; and the senders a key may send as."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.core.validators import DomainNameValidator, validate_email
from django.utils.encoding import punycode

from emails.models import ApiKey

SENDER_MAX_LENGTH = 254  # the longest address SMTP carries (RFC 5321's path, less its brackets)
MAX_SENDERS = 100

_validate_domain = DomainNameValidator(accept_idna=False)  # given the ASCII form: IDNs are encoded first


def api_key_create(*, name: str, senders: Iterable[str] = (), test: bool = False) -> tuple[ApiKey, str]:
    """Returns the stored key and the key itself, which is not stored and cannot be shown again.

    `senders`: the domains and addresses the key may send from (empty: any); `test`: a test key, whose emails go
    through the whole pipeline and are never handed to a provider. Raises ValidationError for a name or a sender
    that is not valid, before anything is stored."""
    if not name or len(name) > ApiKey._meta.get_field("name").max_length:
        raise ValidationError("A name of 1 to 100 characters.")
    api_key = ApiKey(name=name, senders=api_key_senders(senders), test=test)
    return api_key, api_key_issue(api_key)


def api_key_issue(api_key: ApiKey) -> str:
    """Gives a new ApiKey (validated, not saved yet) its key and saves it with the key's hash; returns the key
    itself, which is not stored and cannot be shown again."""
    key = ApiKey.generate()
    api_key.key_hash, api_key.prefix = ApiKey.hash(key), key[:10]
    api_key.save(force_insert=True)
    return key


def api_key_senders(values: Iterable[str]) -> list[str]:
    """The senders as stored: each normalised (sender_normalize), duplicates dropped, in the given order.
    Raises ValidationError naming each value that is neither a domain nor an address."""
    values = list(values)
    if len(values) > MAX_SENDERS:
        raise ValidationError(f"At most {MAX_SENDERS} senders; give a domain rather than each of its addresses.")
    senders, errors = [], []
    for value in values:
        try:
            sender = sender_normalize(value)
        except ValidationError as exc:
            errors.extend(exc.messages)
            continue
        if sender not in senders:
            senders.append(sender)
    if errors:
        raise ValidationError(errors)
    return senders


def sender_normalize(value: str) -> str:
    """'example.com' or 'ops@other.org' as the limit compares them: lower-cased, the domain in its ASCII
    (punycode) form, without the trailing dot of a fully qualified name. Raises ValidationError.

    A domain allows every address at exactly that domain: not its subdomains, which may be delegated to
    someone else (a customer's CNAME, a hosted shop); list each subdomain that sends."""
    value = value.strip()
    # Bounded before anything parses it.
    if not value or len(value) > SENDER_MAX_LENGTH:
        raise ValidationError(f"A sender is a domain or an address of 1 to {SENDER_MAX_LENGTH} characters.")
    shown = repr(value)
    local, at, domain = value.rpartition("@")
    what = "an address such as ops@example.com" if at else "a domain such as example.com (no wildcards)"
    try:
        domain = _ascii_domain(domain)  # a ValidationError of its own says why an IDN is refused
    except UnicodeError:
        raise ValidationError(f"{shown} is not {what}.") from None
    try:
        if at:
            validate_email(f"{local}@{domain}")
        else:
            _validate_domain(domain)
    except ValidationError:
        raise ValidationError(f"{shown} is not {what}.") from None
    return f"{local.lower()}@{domain}" if at else domain


def _ascii_domain(domain: str) -> str:
    """The domain as mail carries it: lower-case, punycode for an IDN (as Django encodes the envelope and
    the From header), no trailing dot. Raises UnicodeError for a domain that has no such form, and
    ValidationError for one whose ASCII form names another domain: IDNA 2003 (Django's encoding) maps
    'straße.de' to strasse.de and fullwidth letters to ASCII ones, while a provider sending UTF-8 keeps
    them, so which domain the mail would claim depends on the provider."""
    domain = domain.lower().removesuffix(".")
    if domain.isascii():
        return domain
    ascii_form = punycode(domain)
    if ascii_form.encode("ascii").decode("idna") != domain:
        raise ValidationError(f"{domain!r} is an ambiguous international domain: its ASCII form is {ascii_form}.")
    return ascii_form


def api_key_may_send_as(api_key: ApiKey | None, address: str) -> bool:
    """Whether `api_key` may send as `address` (a bare address): always for no key (our own tools) and for a
    key with no senders; otherwise when the address, or exactly its domain, is one of the key's senders.
    Case-insensitive; an IDN domain matches its punycode form."""
    if api_key is None or not api_key.senders:
        return True
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return False
    try:
        domain = _ascii_domain(domain)
    except (ValidationError, UnicodeError):
        return False
    allowed = _allowed(tuple(api_key.senders))
    return domain in allowed or f"{local.lower()}@{domain}" in allowed


@functools.lru_cache(maxsize=1024)
def _allowed(senders: tuple[str, ...]) -> frozenset[str]:
    """The key's senders, normalised again: a list written around api_key_senders (a shell, a data fix) still
    compares as documented. An entry that does not normalise allows nothing."""
    allowed = set()
    for sender in senders:
        try:
            allowed.add(sender_normalize(sender))
        except ValidationError:
            continue
    return frozenset(allowed)
