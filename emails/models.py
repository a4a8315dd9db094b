from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import Q
from django.utils import timezone

from infra import encryption
from infra.encryption import EncryptedJSONField, EncryptedTextField

API_KEY_PREFIX = "ms_"


class ApiKey(models.Model):
    """A client's key. Only its SHA-256 is stored: the key itself is shown once, at creation."""

    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12, help_text="The key's first characters, to recognise it.")
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    senders = ArrayField(
        models.CharField(max_length=255),
        default=list,
        blank=True,
        help_text="Domains (example.com) and addresses (ops@other.org) this key may send from, as the From, "
        "Sender and envelope sender; empty: any address.",
    )
    test = models.BooleanField(
        default=False,
        db_default=False,
        help_text="A test key: its emails go through the whole pipeline but are never handed to a provider.",
    )

    # DRF treats the authenticated key as the request's user.
    is_authenticated = True

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(key: str) -> str:
        # Keys are 256 random bits: a fast hash is safe, and a slow one would tax every request.
        return hashlib.sha256(key.encode()).hexdigest()

    @staticmethod
    def generate() -> str:
        return API_KEY_PREFIX + secrets.token_urlsafe(32)


# What Email.content holds while encryption is on: these fields' values, sealed as one.
SEALED_TOGETHER = frozenset({"subject", "text", "html", "headers"})


def _sealed_together(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value} if encryption.enabled() else {}


class _SealedInContent:
    """A field of SEALED_TOGETHER: while encryption is on, its value is saved in Email.content, and its own column
    left empty."""

    def pre_save(self, model_instance, add):
        value = super().pre_save(model_instance, add)
        return type(value)() if value and encryption.enabled() else value


class SealedInContentTextField(_SealedInContent, EncryptedTextField):
    pass


class SealedInContentJSONField(_SealedInContent, EncryptedJSONField):
    pass


class ContentField(EncryptedJSONField):
    """Email.content: while encryption is on, the SEALED_TOGETHER fields' values, sealed as one (compressed
    first); else empty."""

    def pre_save(self, model_instance, add):
        return _sealed_together({name: getattr(model_instance, name) for name in SEALED_TOGETHER})


class Email(models.Model):
    class Status(models.TextChoices):
        PENDING = "PENDING"
        PROCESSING = "PROCESSING"
        SENT = "SENT"
        FAILED = "FAILED"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by email_key_created (api_key first): a separate FK index would only cost every write.
    # No database constraint: its check locks the key's row (FOR KEY SHARE) in every insert, and the
    # concurrent submits of one key then share that lock through a MultiXact, a quarter of PostgreSQL's
    # work per insert. Only an authenticated key's id is ever written, and keys are revoked, not deleted
    # (Django's PROTECT still refuses to delete a key that has emails).
    api_key = models.ForeignKey(
        ApiKey,
        on_delete=models.PROTECT,
        related_name="emails",
        null=True,
        blank=True,
        db_index=False,
        db_constraint=False,
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)

    from_email = models.CharField(max_length=400)
    to = ArrayField(models.CharField(max_length=400))
    cc = ArrayField(models.CharField(max_length=400), default=list, blank=True)
    bcc = ArrayField(models.CharField(max_length=400), default=list, blank=True)
    reply_to = ArrayField(models.CharField(max_length=400), default=list, blank=True)
    # Bare, lower-cased addresses of to, cc and bcc: what recipient search and filters match.
    recipients = ArrayField(models.CharField(max_length=320), default=list, blank=True)
    # The content: sealed with MAIL_ENCRYPTION_KEYS when they are set (infra.encryption).
    subject = SealedInContentTextField(blank=True)
    text = SealedInContentTextField(blank=True)
    html = SealedInContentTextField(blank=True)
    headers = SealedInContentJSONField(default=dict, blank=True)
    tags = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    metadata = EncryptedJSONField(default=dict, blank=True)
    # [{filename, content_type, content (base64)}]: kept with the row, so every retry sends the same bytes.
    attachments = EncryptedJSONField(default=list, blank=True)
    # With MAIL_ENCRYPTION_KEYS set, the subject, bodies and headers are saved here, sealed together (their own
    # columns then empty): each Fernet token pays for an AES key schedule of its own, and compressed before they
    # are sealed, the bodies take less room than PostgreSQL's compression gives them in clear. Loading a row puts
    # them back in their attributes (from_db()); values() and values_list() of those fields read the empty
    # columns, so read them through instances.
    content = ContentField(default=dict, blank=True, db_default={}, compress=True)
    template = models.CharField(max_length=100, blank=True, help_text="The template it was rendered from.")
    # A Postmark client's MessageStream, kept and shown as a tag is; it chooses no provider here.
    message_stream = models.CharField(max_length=100, blank=True, default="", db_default="")
    # Open and click tracking asked for (None: the provider's own default), passed to the providers that
    # offer it (providers.registry.TRACKING_ESPS).
    track_opens = models.BooleanField(null=True, blank=True)
    track_clicks = models.BooleanField(null=True, blank=True)
    # Never handed to a provider: sending records it SENT by the built-in `test` provider (a test key's
    # emails, generate_emails' rows), whatever MAIL_PROVIDERS says.
    test = models.BooleanField(default=False, db_default=False)

    attempts = models.PositiveIntegerField(default=0)
    # Claims whose worker was lost before recording an outcome (killed, out of memory, crashed): an email
    # whose send keeps killing its worker ends FAILED after MAIL_MAX_ATTEMPTS of them.
    leases_lost = models.PositiveSmallIntegerField(default=0, db_default=0)
    send_at = models.DateTimeField(null=True, blank=True)
    # PENDING: when the next attempt is due. The sweep also moves it when it re-enqueues a row.
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # PROCESSING: when the claim expires. Also the claim's identity: a worker finishes only
    # the claim it made (WHERE lease_until = <its lease>), so a stale worker cannot overwrite.
    lease_until = models.DateTimeField(null=True, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    provider_message_id = models.CharField(max_length=1000, blank=True)
    last_error = models.TextField(blank=True)
    resent_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="resends", db_index=False
    )

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # When retention (MAIL_RETENTION_DAYS) erased its subject, bodies, headers and attachments; null: never.
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # Retention: final emails not erased yet, oldest first. Partial: an email enters it once, when it
            # becomes SENT or FAILED, and leaves it when erased.
            models.Index(
                fields=["created_at"],
                name="email_retention_due",
                condition=Q(status__in=["SENT", "FAILED"], erased_at__isnull=True),
            ),
            # The sweep: PENDING rows that are due; PROCESSING rows whose lease has passed.
            models.Index(fields=["next_attempt_at"], name="email_pending_due", condition=Q(status="PENDING")),
            models.Index(fields=["lease_until"], name="email_processing_lease", condition=Q(status="PROCESSING")),
            # The API's list: a key's emails, newest first, optionally by status.
            models.Index(fields=["api_key", "-created_at", "-id"], name="email_key_created"),
            models.Index(fields=["api_key", "status", "-created_at", "-id"], name="email_key_status_created"),
            # Partial: every status change writes a new row version into each index it is in.
            GinIndex(fields=["tags"], name="email_tags", condition=~Q(tags=[])),
            models.Index(fields=["resent_from"], name="email_resent_from", condition=Q(resent_from__isnull=False)),
            # The admin: newest first, filtered by status; recipient search.
            models.Index(fields=["-created_at"], name="email_created"),
            models.Index(fields=["status", "-created_at"], name="email_status_created"),
            GinIndex(fields=["recipients"], name="email_recipients"),
            # The admin's provider filter. Partial: rows not tried yet (provider "") are not in it, so a
            # claim costs no write here.
            models.Index(fields=["provider", "-created_at"], name="email_provider_created", condition=~Q(provider="")),
            # The dashboard: sent per minute and per provider (only the SENT write adds an entry), and
            # the latest failures.
            models.Index(fields=["sent_at"], name="email_sent_at", condition=Q(sent_at__isnull=False)),
            models.Index(fields=["-updated_at"], name="email_failed_updated", condition=Q(status="FAILED")),
            # Delivery webhooks find their email by the provider's message id.
            models.Index(
                fields=["provider_message_id"], name="email_provider_message_id", condition=~Q(provider_message_id="")
            ),
        ]

    def __str__(self) -> str:
        return str(self.id)

    def save(self, *args, update_fields=None, **kwargs):
        if update_fields is None and not self._state.adding and (deferred := self.get_deferred_fields()):
            # What Django saves of an instance with deferred fields, made explicit so that it is expanded below.
            update_fields = {field.attname for field in self._meta.concrete_fields if not field.primary_key} - deferred
        if update_fields is not None and not SEALED_TOGETHER.isdisjoint(update_fields):
            update_fields = {*update_fields, *SEALED_TOGETHER, "content"}  # saved together
        super().save(*args, update_fields=update_fields, **kwargs)

    @classmethod
    def stored_row(cls, row: dict[str, Any]) -> dict[str, Any]:
        """A new email's row (columns by attname, every one given) as saving it stores it, for the doors' SQL of
        their own: sealed when MAIL_ENCRYPTION_KEYS are set, the subject, bodies and headers together."""
        together = _sealed_together({name: row[name] for name in SEALED_TOGETHER})
        if together:
            row = {**row, **{name: type(row[name])() for name in SEALED_TOGETHER}, "content": together}
        return encryption.as_stored(cls, row)

    @classmethod
    def from_db(cls, db, field_names, values):
        email = super().from_db(db, field_names, values)
        loaded = email.__dict__
        if "content" not in loaded:
            # Loaded without `content`, which may hold them: these load with it, when first read.
            for name in SEALED_TOGETHER.intersection(loaded):
                del loaded[name]
        elif together := loaded["content"]:
            # Every one of them, deferred ones too. A column's own value wins: one a QuerySet.update() wrote
            # later (emptying one that way must empty `content` too, as retention does).
            for name in SEALED_TOGETHER:
                if not loaded.get(name):
                    loaded[name] = together.get(name) or ({} if name == "headers" else "")
            loaded["content"] = {}
        return email

    def refresh_from_db(self, using=None, fields=None, from_queryset=None):
        if fields is None or SEALED_TOGETHER.isdisjoint(fields):
            return super().refresh_from_db(using=using, fields=fields, from_queryset=from_queryset)
        # A deferred subject (or body, or headers) may be in `content`: loaded with it, which brings the others
        # along; those this instance holds already are kept as they are (they may be unsaved edits).
        held = {name: self.__dict__[name] for name in SEALED_TOGETHER.difference(fields) if name in self.__dict__}
        super().refresh_from_db(using=using, fields=[*fields, "content"], from_queryset=from_queryset)
        self.__dict__.update(held)
        return None

    def can_retry(self) -> bool:
        return self.attempts < settings.MAIL_MAX_ATTEMPTS


class Template(models.Model):
    """A stored email, rendered with each submit's `context` in Django's template language. A template
    belongs to one API key, or is shared (no key): a key renders its own and the shared ones."""

    api_key = models.ForeignKey(
        ApiKey, on_delete=models.CASCADE, null=True, blank=True, related_name="templates", help_text="Empty: shared."
    )
    name = models.SlugField(max_length=100)
    subject = models.CharField(max_length=998)
    text = models.TextField(blank=True, help_text="Plain-text body; not escaped.")
    html = models.TextField(blank=True, help_text="HTML body; context values are escaped.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "name"], name="template_key_name"),
            models.UniqueConstraint(fields=["name"], condition=Q(api_key__isnull=True), name="template_shared_name"),
        ]

    def __str__(self) -> str:
        return self.name


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key and the response it got, replayed for a repeat of the same request."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response = EncryptedJSONField()  # the email as the API showed it: its content
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_key_unique")]

    def __str__(self) -> str:
        return self.key


# Event types that are a provider's error (a failed attempt), as the dashboard shows them.
ERROR_TYPES = ["retry", "failed"]


class EmailEvent(models.Model):
    """What happened to an email: each attempt's outcome, and later the provider's delivery events."""

    class Type(models.TextChoices):
        # Ours, one per attempt at a provider
        SENT = "sent"
        RETRY = "retry"  # a transient failure; another attempt follows (at once at another provider, or later)
        # A transient failure after the message was handed over (the connection dropped before the
        # provider's answer): it may have been delivered, and the retry may duplicate it.
        POSSIBLY_SENT = "possibly_sent"
        FAILED = "failed"
        RECOVERED = "recovered"  # a worker's lease passed; the email was queued again
        RETRIED = "retried"  # a FAILED email given a fresh set of attempts (POST /api/v1/emails/retry)
        SUPPRESSED = "suppressed"  # recipients left out: they bounced or complained before
        CANCELLED = "cancelled"  # an operator cancelled it while it was PENDING
        # The provider's, from its tracking webhook (anymail's normalised event types)
        DELIVERED = "delivered"
        BOUNCED = "bounced"
        DEFERRED = "deferred"
        COMPLAINED = "complained"
        REJECTED = "rejected"
        OPENED = "opened"
        CLICKED = "clicked"
        UNSUBSCRIBED = "unsubscribed"
        OTHER = "other"

    email = models.ForeignKey(Email, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=20, choices=Type.choices)
    at = models.DateTimeField(default=timezone.now)
    provider = models.CharField(max_length=100, blank=True)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["email", "at"], name="event_email_at"),
            # The dashboard's latest error per provider: one index probe per provider.
            models.Index(fields=["provider", "-at"], name="event_provider_error", condition=Q(type__in=ERROR_TYPES)),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.at:%Y-%m-%d %H:%M:%S}"


class Suppression(models.Model):
    """An address we no longer send to: it bounced hard, or its owner complained."""

    class Reason(models.TextChoices):
        BOUNCED = "bounced"
        COMPLAINED = "complained"
        MANUAL = "manual"

    # The key whose email bounced or drew the complaint: only its emails leave the address out. Empty: every
    # key's (an operator's suppression, or one from before suppressions had keys).
    api_key = models.ForeignKey(
        ApiKey,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="suppressions",
        help_text="Empty: all keys.",
    )
    address = models.CharField(max_length=320, help_text="Bare and lower-cased.")
    reason = models.CharField(max_length=20, choices=Reason.choices, default=Reason.MANUAL)
    detail = models.TextField(blank=True)
    email = models.ForeignKey(Email, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "address"], name="suppression_key_address"),
            models.UniqueConstraint(
                fields=["address"], condition=Q(api_key__isnull=True), name="suppression_every_key_address"
            ),
        ]
        # The API's list: a key's suppressions, newest first, a page at a time.
        indexes = [models.Index(fields=["api_key", "-created_at", "-id"], name="suppression_key_created")]

    def __str__(self) -> str:
        return self.address


# The events a webhook may ask for (the contract's names), and the provider events each one reports.
WEBHOOK_EVENTS = [
    "email.sent", "email.failed", "email.delivered", "email.deferred",
    "email.bounced", "email.complained", "email.opened", "email.clicked",
]  # fmt: skip
PROVIDER_WEBHOOK_EVENTS = {
    EmailEvent.Type.DELIVERED: "email.delivered",
    EmailEvent.Type.DEFERRED: "email.deferred",
    EmailEvent.Type.BOUNCED: "email.bounced",
    EmailEvent.Type.COMPLAINED: "email.complained",
    EmailEvent.Type.OPENED: "email.opened",
    EmailEvent.Type.CLICKED: "email.clicked",
}


def new_webhook_secret() -> str:
    """Standard Webhooks' form: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Webhook(models.Model):
    """A URL of an API key's that is told what happens to the key's emails, signed with its secret."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = ArrayField(models.CharField(max_length=40), default=list, blank=True, help_text="Empty: every event.")
    active = models.BooleanField(default=True)
    # Why it was turned off (its receiver answered 410 Gone); empty while active.
    disabled_reason = models.CharField(max_length=200, blank=True)
    secret = EncryptedTextField(default=new_webhook_secret, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["api_key"], name="webhook_active_key", condition=Q(active=True))]

    def __str__(self) -> str:
        return self.url


class WebhookMessage(models.Model):
    """The outbox: one event for one webhook, written in the transaction of the change it reports, then
    delivered (and retried, on the schedule in next_attempt_at) by workers. Its id is the `webhook-id` of every
    delivery attempt, so a receiver can drop a repeat."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"  # every attempt of the schedule failed
        DISABLED = "disabled"  # its webhook was turned off (410) or deleted first

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="messages")
    email = models.ForeignKey(Email, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    type = models.CharField(max_length=40)
    # The body as delivered (every attempt sends the same bytes): {type, timestamp, data}. Its data.metadata is
    # the email's column copied as stored, sealed when that is (webhook_delivery opens it).
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhookmessage_due", condition=Q(status="pending")),
            models.Index(fields=["webhook", "-created_at"], name="webhookmessage_webhook"),
            # The sweep deletes finished messages (with their attempts) after MAIL_WEBHOOK_KEEP_DAYS.
            models.Index(fields=["created_at"], name="webhookmessage_finished", condition=~Q(status="pending")),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"

    @staticmethod
    def header_id(message_id: uuid.UUID) -> str:
        """A message's id as every delivery of it carries it in `webhook-id` (the same on each retry)."""
        return f"msg_{message_id.hex}"


class WebhookAttempt(models.Model):
    """One try at delivering a message: the receiver's status code, or why there was none."""

    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="attempts_made")
    at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["message", "-at"], name="webhookattempt_message")]

    def __str__(self) -> str:
        return f"{self.status_code or self.error} at {self.at}"
