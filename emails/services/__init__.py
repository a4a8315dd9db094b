"""Writes, by sub-domain. Callers import from here: `from emails.services import email_create`."""

from emails.services.accepting import (
    OnceItem,
    email_create,
    email_create_batch,
    email_create_batch_once,
    email_resend,
    emails_retry_now,
    idempotent,
    template_errors,
)
from emails.services.api_keys import api_key_create
from emails.services.cancelling import emails_cancel
from emails.services.delivery_events import email_record_delivery_event, suppression_add
from emails.services.recovery import SweepResult, emails_sweep_stranded
from emails.services.retention import RetentionResult, emails_apply_retention
from emails.services.sending import build_message, email_send, emails_send, retry_delay
from emails.services.validating import email_fields

__all__ = [
    "OnceItem",
    "RetentionResult",
    "SweepResult",
    "api_key_create",
    "build_message",
    "email_create",
    "email_create_batch",
    "email_create_batch_once",
    "email_fields",
    "email_record_delivery_event",
    "email_resend",
    "email_send",
    "emails_apply_retention",
    "emails_cancel",
    "emails_retry_now",
    "emails_send",
    "emails_sweep_stranded",
    "idempotent",
    "retry_delay",
    "suppression_add",
    "template_errors",
]
