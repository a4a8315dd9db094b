"""Parse MAIL_PROVIDERS into ProviderConfigs, failing loud with the provider's name."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

# Short names for Django's and django-anymail's email backends.
BACKENDS = {
    "smtp": "providers.smtp.EmailBackend",  # Django's, sending the same bytes for less work
    "file": "providers.outbox.EmailBackend",
    "console": "django.core.mail.backends.console.EmailBackend",
    "locmem": "django.core.mail.backends.locmem.EmailBackend",
    "ses": "anymail.backends.amazon_ses.EmailBackend",
    "amazon_ses": "anymail.backends.amazon_ses.EmailBackend",
    "brevo": "anymail.backends.brevo.EmailBackend",
    "mailersend": "anymail.backends.mailersend.EmailBackend",
    "mailgun": "anymail.backends.mailgun.EmailBackend",
    "mailjet": "anymail.backends.mailjet.EmailBackend",
    "mandrill": "anymail.backends.mandrill.EmailBackend",
    "postal": "anymail.backends.postal.EmailBackend",
    "postmark": "anymail.backends.postmark.EmailBackend",
    "resend": "anymail.backends.resend.EmailBackend",
    "sendgrid": "anymail.backends.sendgrid.EmailBackend",
    "sparkpost": "anymail.backends.sparkpost.EmailBackend",
    "unisender_go": "anymail.backends.unisender_go.EmailBackend",
}

# The backends that take open and click tracking per message (anymail's track_opens and track_clicks, as its
# feature matrix lists them). Any other backend gets an email without them: anymail would refuse it as an
# unsupported feature, and SMTP has no such thing.
TRACKING_BACKENDS = {
    BACKENDS[name]
    for name in (
        "mailersend",
        "mailgun",
        "mailjet",
        "mandrill",
        "postmark",
        "resend",
        "sendgrid",
        "sparkpost",
        "unisender_go",
    )
}

KNOWN_KEYS = {"name", "backend", "options", "rate_limit", "burst", "priority", "weight"}
# The built-in provider of test emails (emails/services/sending.py): it records them SENT and sends nothing.
# Reserved, so that what it "sent" is never mistaken for a real provider's sends.
TEST_PROVIDER = "test"


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    backend: str  # dotted path of a Django email backend
    options: dict[str, Any] = field(default_factory=dict)
    rate_limit: float | None = None  # emails per second across all workers
    burst: int = 1  # emails that may go at once after a quiet spell, beyond the steady rate
    priority: int = 1
    weight: float = 1

    @property
    def offers_tracking(self) -> bool:
        return self.backend in TRACKING_BACKENDS

    def __repr__(self) -> str:
        # Options hold credentials: keep them out of every repr, log and traceback.
        return f"ProviderConfig(name={self.name!r}, backend={self.backend!r})"


def _number(entry: dict, key: str, label: str, default: float | None, *, integer: bool = False) -> Any:
    value = entry.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        kind = "a whole number" if integer else "a number"
        raise ImproperlyConfigured(f"MAIL_PROVIDERS: provider {label}: {key} must be {kind}, not {value!r}")
    if key != "priority" and value <= 0:
        raise ImproperlyConfigured(f"MAIL_PROVIDERS: provider {label}: {key} must be above 0, not {value!r}")
    return value


def parse_provider(entry: object, index: int) -> ProviderConfig:
    if not isinstance(entry, dict):
        raise ImproperlyConfigured(f"MAIL_PROVIDERS: provider #{index + 1} must be a JSON object")
    name = entry.get("name")
    label = repr(name) if isinstance(name, str) and name else f"#{index + 1}"
    if not isinstance(name, str) or not name:
        raise ImproperlyConfigured(f"MAIL_PROVIDERS: provider {label}: 'name' is required")
    if name == TEST_PROVIDER:
        raise ImproperlyConfigured(
            f"MAIL_PROVIDERS: provider {label}: the name is reserved for test emails, which no provider sends"
        )
    unknown = set(entry) - KNOWN_KEYS
    if unknown:
        raise ImproperlyConfigured(f"MAIL_PROVIDERS: provider {label}: unknown keys {sorted(unknown)}")
    backend = entry.get("backend")
    if not isinstance(backend, str) or not backend:
        raise ImproperlyConfigured(f"MAIL_PROVIDERS: provider {label}: 'backend' is required")
    path = BACKENDS.get(backend, backend)
    if "." not in path:
        raise ImproperlyConfigured(
            f"MAIL_PROVIDERS: provider {label}: unknown backend {backend!r} "
            f"(one of {', '.join(sorted(BACKENDS))}, or a dotted path)"
        )
    try:
        backend_class = import_string(path)
    except (ImportError, ImproperlyConfigured) as exc:  # anymail: an ESP's extra package not installed
        raise ImproperlyConfigured(f"MAIL_PROVIDERS: provider {label}: cannot import backend {path!r}: {exc}") from None
    options = entry.get("options", {})
    if not isinstance(options, dict):
        raise ImproperlyConfigured(f"MAIL_PROVIDERS: provider {label}: 'options' must be a JSON object")
    accepted = {name for name in inspect.signature(backend_class.__init__).parameters if name not in ("self", "kwargs")}
    if not path.startswith("anymail.") and set(options) - accepted:
        # Django's backends swallow unknown keyword arguments: a misspelt "hots" would go unnoticed.
        unknown = sorted(set(options) - accepted)
        raise ImproperlyConfigured(
            f"MAIL_PROVIDERS: provider {label}: unknown options {unknown} (known: {', '.join(sorted(accepted))})"
        )
    try:
        # Building the backend opens no connection, but it checks the options (anymail: a missing api_key).
        backend_class(fail_silently=False, **options)
    except (ImproperlyConfigured, TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"MAIL_PROVIDERS: provider {label}: bad options: {exc}") from None
    return ProviderConfig(
        name=name,
        backend=path,
        options=options,
        rate_limit=_number(entry, "rate_limit", label, None),
        burst=_number(entry, "burst", label, 1, integer=True),
        priority=_number(entry, "priority", label, 1, integer=True),
        weight=_number(entry, "weight", label, 1),
    )


def parse_providers(config: object) -> list[ProviderConfig]:
    """Returns the providers, lowest priority first; raises ImproperlyConfigured naming the bad provider."""
    if not isinstance(config, list) or not config:
        raise ImproperlyConfigured("MAIL_PROVIDERS must be a non-empty JSON list of providers")
    providers = [parse_provider(entry, index) for index, entry in enumerate(config)]
    names = [p.name for p in providers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ImproperlyConfigured(f"MAIL_PROVIDERS: provider names must be unique: {duplicates}")
    return sorted(providers, key=lambda p: p.priority)
