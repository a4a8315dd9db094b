"""The API's reference text in its OpenAPI schema (/api/schema/, /api/docs/): what each operation does, the
statuses, the errors each answers with, and examples. Written for the API's clients."""

from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

from emails.fields import NO_NUL, NulFreeTextField, RefusesUnknownFields
from emails.models import Email


class RefusesUnknownFieldsExtension(OpenApiSerializerExtension):
    """An object that refuses a field it does not know (a 400 naming it) says so: `additionalProperties: false`.
    The mapping call is the one drf-spectacular's documentation gives for serializer extensions."""

    target_class = RefusesUnknownFields
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        mapped = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**mapped, "additionalProperties": False}


class NulFreeTextFieldExtension(OpenApiSerializerFieldExtension):
    """Free text, as long as the field's max_length, with no NUL: what the server refuses, the schema states."""

    target_class = NulFreeTextField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "string", "maxLength": self.target.max_length, "pattern": NO_NUL}


STATUS_MEANINGS = {
    Email.Status.PENDING: "accepted; waiting for its `send_at`, for a worker, or for its next attempt after a "
    "temporary failure",
    Email.Status.PROCESSING: "a worker is sending it",
    Email.Status.SENT: "a provider accepted it",
    Email.Status.FAILED: "not sent, for good: a provider refused it, its attempts ran out, every recipient is "
    "suppressed, or an operator cancelled it (see `last_error`)",
}
# Each status and what it means, in the order an email goes through them (a KeyError here: a new status
# needs its meaning).
STATUS_CHOICES = [(status, STATUS_MEANINGS[status]) for status in Email.Status.values]
STATUSES = "PENDING, then PROCESSING, then SENT or FAILED (a temporary failure makes it PENDING again). " + "; ".join(
    f"{status}: {meaning}" for status, meaning in STATUS_CHOICES
)
ATTEMPTS = "Tries so far; after the last allowed one (5 unless configured) a temporary failure is final: FAILED."
PROVIDER = "The provider of the latest try; empty until one was tried."
PROVIDER_MESSAGE_ID = "The id the provider gave the message, once SENT."
LAST_ERROR = 'Why the latest try failed (or "suppressed", "cancelled"); empty once SENT.'
EVENT_TYPES = (
    "sent, retry (a temporary failure), possibly_sent (the connection dropped after the message went: it may "
    "arrive twice), failed, recovered (its worker was lost; queued again), retried (a FAILED email given fresh "
    "attempts), suppressed (recipients left out), "
    "cancelled; then what the provider reports: delivered, bounced, deferred, complained, rejected, opened, "
    "clicked, unsubscribed, other."
)

REPLAYED_HEADER = "Idempotent-Replayed"

ERROR_RESPONSES = {
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='Each bad field with its messages: `{"to": ["..."], "subject": ["..."]}`; fields it does not '
        'know are named too (`{"colour": ["Unknown field."]}`), inside attachments as well. Nothing was stored.',
    ),
    401: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='No API key, or not a valid one (unknown or revoked): `{"detail": "..."}` saying to send '
        "`Authorization: Bearer <key>`; `WWW-Authenticate: Bearer`.",
    ),
    404: OpenApiResponse(
        OpenApiTypes.OBJECT, description='`{"detail": "No such email."}`: unknown, or another API key\'s.'
    ),
    413: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='`{"detail": "..."}`: an email over 10 MB (text, html and decoded attachments), or a '
        "request body over 15 MB. Nothing was stored.",
    ),
    415: OpenApiResponse(OpenApiTypes.OBJECT, description='`{"detail": "..."}`: the body is not `application/json`.'),
    422: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='`{"detail": "..."}`: this Idempotency-Key came with another request. Nothing was stored.',
    ),
    429: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='`{"detail": "..."}`: over the API key\'s rate; `Retry-After` says in how many seconds to '
        "try again.",
    ),
    503: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='`{"detail": "..."}`: the database, or template rendering, is unavailable for a moment: try '
        "again after `Retry-After` seconds. A submit answered so stored nothing.",
    ),
}
BAD_QUERY = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description='Each bad query parameter with its messages: `{"status": ["..."]}`; parameters it does not know '
    'are named too (`{"page": ["Unknown query parameter."]}`).',
)


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """The error answers an operation may give, by status code."""
    return {code: ERROR_RESPONSES[code] for code in codes}


BATCH_ERRORS = {
    **errors(401, 415, 422, 429, 503),
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='`{"emails": ["..."]}`: `emails` is missing, empty, not a list or over 500; or the body has '
        "another field, named. An email's own errors are not a 400: they are its result. Nothing was stored.",
    ),
    413: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='`{"detail": "..."}`: a request body over 15 MB. An email over 10 MB is not a 413: it is its '
        'result (`{"errors": {"size": [...]}}`). Nothing was stored.',
    ),
}
RESEND_ERRORS = {
    **errors(401, 404, 429, 503),
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='`{"from": ["..."]}`: the API key may no longer send from this address (its sender list '
        'changed); `{"api_key": ["..."]}`: the key was revoked in the last seconds. Nothing was stored.',
    ),
}


EMAIL_ID = OpenApiParameter(
    "email_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The email's id, as submitting it answered."
)
MAX_IDEMPOTENCY_KEY_LENGTH = 255
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH},
    OpenApiParameter.HEADER,
    description="1 to 255 characters, chosen by you (a UUID, or your order's id). A repeat with the same key and "
    f"body gets the first answer again, with `{REPLAYED_HEADER}: true`, and nothing is sent twice, even when the "
    "repeats arrive at the same moment; the same key with another body is a 422. A request refused with a 4xx "
    "does not use up its key. Keys are per API key and kept 48 hours.",
)
LOCATION = OpenApiParameter(
    "Location",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[202],
    description="The new email's URL: `/api/v1/emails/{id}`.",
)
IDEMPOTENT_REPLAYED = OpenApiParameter(
    REPLAYED_HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[202],
    enum=["true"],
    description="`true` on the answer to a repeated Idempotency-Key: the stored first answer, nothing new was "
    "stored or sent. Absent on a first answer.",
)

EMAIL_CREATE = f"""Stores the email and queues it: answers 202 with the email as `GET /api/v1/emails/{{id}}` shows
it, and its URL in `Location`. Follow it there, or in the list, to SENT or FAILED.

**Statuses**: {STATUSES}.

**Content**: `subject` and `text` and/or `html`; or a stored `template`, rendered with `context` (subject and
text as written, html with the context escaped). Fields given in the request win over the template's. What
was rendered is what is stored, shown and sent.

**Inline images**: an attachment with a `content_id` is shown inside the html where it refers to
`cid:<content_id>`, as in `<img src="cid:logo.png">`.

**Limits**: at most 50 recipients in `to`, `cc` and `bcc` together; 10 MB per email, counting `text`, `html`
and the decoded attachments; a request body of at most 15 MB; JSON nested at most 32 levels.

**Errors**: 400 names each bad field (`{{"field": ["message"]}}`), unknown fields included at every level, and
nothing is stored; a template that is unknown, does not render, or renders past the limits is a 400 naming
`template`. 401 without a valid key, 413 over the size limits, 415 for a body that is not JSON, 422 for a
reused Idempotency-Key, 429 over the key's rate (`Retry-After`), 503 (`Retry-After`) while the service cannot
store it: try again, nothing was stored."""

EMAIL_BATCH_CREATE = """Up to 500 emails in one request, each exactly as `POST /api/v1/emails` takes it, in
`{"emails": [...]}`. Answers 202 with one result per email, in order: the accepted email's summary (as the
list shows it), or `{"errors": {"field": ["message"]}}` for one that is refused (`{"errors": {"size": [...]}}`
for one over 10 MB). The valid ones are stored and sent whatever the others do.

A 400 refuses the whole batch only when `emails` itself is wrong (missing, empty, over 500, not a list) or the
body has another field; templates render within one time budget for the whole batch. Errors otherwise as for
`POST /api/v1/emails`."""

EMAIL_LIST = """The API key's emails, newest first, a page at a time (`limit`, default 50, at most 500).
`next` is the URL of the next page (null on the last): pages are cut by a cursor, so emails that arrive while
you page never make one repeat or go missing. Filters combine. A query parameter that is not one of these is a
400 naming it; a `status` that is not a status is a 400 listing the statuses."""

EMAIL_GET = """One of the API key's emails: its content (attachments without their bytes), where it stands,
and its events (each try's outcome, then what the provider reported). Another key's email is a 404, as an
unknown one."""

EMAIL_RESEND = """A new email with the same content as this one (attachments included), queued as if submitted
now; its `resent_from` is this email's id. Answers 202 with the new email, its URL in `Location`. A 400 when
the API key may no longer send it (no longer allowed its sender; or revoked, until every web process knows)."""

STATS = """Counts of the API key's emails by status, how long the longest-waiting due email has waited, and
what was sent and failed in the last hour."""

EMAIL_EXAMPLE = OpenApiExample(
    "An order confirmation",
    request_only=True,
    value={
        "from": "Shop <shop@example.com>",
        "to": ["alice@example.org"],
        "subject": "Your order #1234",
        "text": "Thank you for your order.",
        "html": "<p>Thank you for your order.</p>",
        "tags": ["order"],
        "metadata": {"order_id": "1234"},
    },
)
TEMPLATE_EXAMPLE = OpenApiExample(
    "From a stored template",
    request_only=True,
    value={"from": "shop@example.com", "to": "alice@example.org", "template": "welcome", "context": {"name": "Alice"}},
)
INLINE_IMAGE_EXAMPLE = OpenApiExample(
    "With an inline image",
    request_only=True,
    value={
        "from": "shop@example.com",
        "to": ["alice@example.org"],
        "subject": "Our new logo",
        "html": '<p><img src="cid:logo.png" alt="Shop"></p>',
        "attachments": [
            {
                "filename": "logo.png",
                "content_type": "image/png",
                "content_id": "logo.png",
                "content": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAA"
                "AABJRU5ErkJggg==",
            }
        ],
    },
)


# --- webhooks ---------------------------------------------------------------------------------------------

WEBHOOK_EVENT_TYPES = (
    "email.sent (a provider accepted it), email.failed (not sent, for good), then what the provider reports: "
    "email.delivered, email.deferred, email.bounced, email.complained, email.opened, email.clicked."
)
WEBHOOK_ID = OpenApiParameter(
    "webhook_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The webhook's id, as creating it answered."
)
WEBHOOK_LOCATION = OpenApiParameter(
    "Location",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[201],
    description="The new webhook's URL: `/api/v1/webhooks/{id}`.",
)
WEBHOOK_NOT_FOUND = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description='`{"detail": "No such webhook."}`: unknown, deleted, or another API key\'s.',
)
WEBHOOK_CREATE_ERRORS = {
    **errors(401, 415, 429, 503),
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='Each bad field with its messages: `{"url": ["..."]}` for a URL that is not http(s), or '
        "whose host does not resolve or resolves to a private, loopback or link-local address; "
        '`{"events": ["..."]}` for an unknown or repeated event; `{"non_field_errors": ["..."]}` when the API key '
        "has 20 webhooks already. Fields it does not know are named too. Nothing was stored.",
    ),
}

WEBHOOK_CREATE = f"""A URL that is told, by a signed POST, of what happens to the API key's emails: each event
in `events` (left out or empty: every event, those added later too). Answers 201 with the webhook and its
`secret`, shown **only in this answer**: keep it to verify each request's `webhook-signature` (Standard Webhooks:
an HMAC-SHA256 of `webhook-id.webhook-timestamp.body`, which the `standardwebhooks` libraries check).

**Events**: {WEBHOOK_EVENT_TYPES}

**The URL**: http or https, at most 2000 characters, no user name or password. Its host is resolved now, and
a host that does not resolve, or resolves to a private, loopback or link-local address (`localhost`,
`10.0.0.0/8`, `169.254.169.254`), is a 400 naming `url`, unless the service runs with
`MAIL_WEBHOOK_ALLOW_PRIVATE=1`. An API key has at most 20 webhooks."""

WEBHOOK_LIST = """The API key's webhooks, newest first (at most 20, all in one answer), each with whether it is
active: a receiver that answered 410 Gone turned its webhook off, and `disabled_reason` says so. Secrets are
never shown again."""

WEBHOOK_GET = """One of the API key's webhooks: its URL, the events it is told of, and whether it is active
(`disabled_reason` says why not). Its secret is never shown again. Another key's webhook is a 404, as an
unknown one."""

WEBHOOK_DELETE = """Deletes the webhook: no event is sent to it any more, including those already waiting for
a delivery or a retry, and it is a 404 from then on. Another key's webhook is a 404, as an unknown one."""

WEBHOOK_DELIVERIES = """The webhook's latest delivery attempts, newest first: `limit` of them (default and
at most 100); older ones are not listed. Each gives the event, the id of its message (the `webhook-id` header,
the same on every retry of one event), the receiver's status code, or the error when there was no answer
(a timeout, a refused connection), and when it was made. A non-2xx answer is retried with backoff for about a
day; a 410 turns the webhook off."""

WEBHOOK_EXAMPLE = OpenApiExample(
    "Sends and bounces",
    request_only=True,
    value={"url": "https://hooks.example.com/mail", "events": ["email.sent", "email.failed", "email.bounced"]},
)


# --- suppressions and bulk retry ---------------------------------------------------------------------------

SUPPRESSION_ADDRESS = OpenApiParameter(
    "address",
    {"type": "string", "maxLength": 320},
    OpenApiParameter.PATH,
    description="The suppressed address, in any case (`bob@example.org`).",
)
SUPPRESSION_NOT_FOUND = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description='`{"detail": "No such suppression."}`: the API key has not suppressed this address (another '
    "key's, or one for every key that only an operator can lift, is not its own).",
)
SUPPRESSION_CREATE_ERRORS = {
    **errors(401, 415, 429, 503),
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='Each bad field with its messages: `{"address": ["..."]}` for what is not an email address '
        "alone (a name with it, or over 320 characters); fields it does not know are named too. Nothing was stored.",
    ),
}
EMAIL_RETRY_ERRORS = {
    **errors(401, 415, 422, 429, 503),
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='Each bad field with its messages: `{"status": ["..."]}` for a status other than FAILED, '
        '`{"created_after": ["..."]}` for a time that is not one; fields it does not know are named too. Nothing '
        "was retried.",
    ),
}

SUPPRESSION_LIST = """The addresses the API key's emails are not sent to, newest first, a page at a time
(`limit`, default 50, at most 500): those added through this API (`source` api), and those a provider's tracking
webhook reported as a hard bounce or a complaint about one of the key's emails (`source` bounce, complaint).
`next` is the URL of the next page (null on the last): pages are cut by a cursor, so suppressions added while you
page never make one repeat or go missing. A query parameter that is not one of these is a 400 naming it. Another
key's are not shown, and neither are the suppressions an operator made for every key: they apply to the key's
emails too, and only an operator lifts them."""

SUPPRESSION_CREATE = """Suppresses an address for the API key's emails: from now on it is left out of every
email of the key's (an email to no other recipient is FAILED with `last_error` "suppressed"), whatever the
provider. Other keys' emails to it are not affected. Answers 201 with the suppression; an address the key has
already suppressed is answered 200 with the suppression as it was (its first `reason` stays)."""

SUPPRESSION_DELETE = """Lifts the API key's suppression of the address: its emails to it are sent again, and a
bounce or complaint reported later suppresses it again. An address the key has not suppressed is a 404: another
key's suppressions, and those an operator made for every key, are not the key's to lift."""

EMAIL_RETRY = """Sends the API key's FAILED emails again, those matching every filter given (created in a time
range, last tried at a `provider`, a `last_error` containing a text): each goes back to PENDING with a fresh set
of attempts, starting now, and gets a `retried` event. Emails that
failed because every recipient is suppressed stay FAILED: lift the suppression first. Answers 202 with how many
went back; they are sent in the next moments, as new submissions are."""

SUPPRESSION_EXAMPLE = OpenApiExample(
    "An address that asked to hear no more",
    request_only=True,
    value={"address": "bob@example.org", "reason": "asked by phone to get no more mail"},
)
EMAIL_RETRY_EXAMPLE = OpenApiExample(
    "Yesterday's emails that one provider refused",
    request_only=True,
    value={
        "status": "FAILED",
        "created_after": "2026-11-23T00:00:00Z",
        "created_before": "2026-11-24T00:00:00Z",
        "provider": "mailgun",
        "error_contains": "rate limit",
    },
)


# --- templates ---------------------------------------------------------------------------------------------

# One line: no CR, LF or other control character (a tab is allowed), as a subject must be.
ONE_LINE = "^[^\\x00-\\x08\\x0a-\\x1f\\x7f\\x85\\u2028\\u2029]*$"
TEMPLATE_NAME = OpenApiParameter(
    "name",
    {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[-a-zA-Z0-9_]+$"},
    OpenApiParameter.PATH,
    description="The template's name, as emails give it in `template`.",
)
TEMPLATE_LOCATION = OpenApiParameter(
    "Location",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[201],
    description="The new template's URL: `/api/v1/templates/{name}`.",
)
TEMPLATE_NOT_FOUND = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description='`{"detail": "No such template."}`: the API key has no template of that name and none is shared '
    "(another key's templates are not there for it).",
)
TEMPLATE_NOT_YOURS = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description='`{"detail": "No template of yours named ..."}`: the API key has no template of its own of that '
    "name. A shared one is an operator's, read-only here; another key's is not there for it.",
)
TEMPLATE_WRITE_ERRORS = {
    **errors(401, 415, 429, 503),
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description='Each bad field with its messages: `{"html": ["Does not compile: ..."]}` for a part that is '
        'not a valid template, `{"text": [...], "html": [...]}` when there is neither (or together they exceed '
        'an email\'s 10 MB), `{"name": ["..."]}` for a name the key has already or one that is not a slug; '
        "fields it does not know are named too. Nothing was stored.",
    ),
}
TEMPLATE_NAME_FIELD = (
    "What emails give as `template`: 1 to 100 letters, digits, hyphens and underscores (`order-shipped`). Unique "
    "among the key's templates; it may be the name of a shared one, which the key's own then replaces for it."
)
TEMPLATE_SUBJECT = (
    "The subject, one line of at most 998 characters, in Django's template language: `Welcome, {{ name }}!`."
)
TEMPLATE_TEXT = "The plain-text body, in Django's template language; context values are not escaped. Empty: none."
TEMPLATE_HTML = "The HTML body, in Django's template language; context values are escaped. Empty: none."

TEMPLATE_LIST = """The templates the API key's emails may name in `template`, by name (at most 500): its own
(`shared` false) and those an operator shared with every key (`shared` true, read-only here). When the key has
one of its own with a shared one's name, both are listed, and emails render its own. Other keys' templates are
never shown."""

TEMPLATE_CREATE = """Stores a template for the API key's emails: `subject` and `text` and/or `html`, in Django's
template language, rendered with each email's `context` (html with its values escaped). Each part is compiled
now, and one that does not compile is a 400 naming it, as is a template with neither text nor html. Answers 201
with the template and its URL in `Location`. A name the key has already is a 400 naming `name` (replace it with
PUT); a shared template's name is allowed: the key's own wins for its emails."""

TEMPLATE_GET = """A template the API key's emails may name: its own of that name, else the shared one (`shared`
true). Another key's template is a 404, as an unknown one."""

TEMPLATE_REPLACE = """Replaces the API key's own template of that name with the parts given (a part left out is
empty), checked as when it was made; emails submitted from then on render the new one, those already accepted
keep what they rendered. A shared template is a 404 here: it is an operator's, read-only through the API (make
one of your own with its name instead). Another key's template is a 404, as an unknown one."""

TEMPLATE_DELETE = """Deletes the API key's own template of that name: its emails that name it render the shared
template of that name, if there is one, else are refused with a 400 naming `template`. Emails already accepted
keep what they rendered. A shared template is a 404 here (an operator's), as is another key's."""

TEMPLATE_CREATE_EXAMPLE = OpenApiExample(
    "A welcome email",
    request_only=True,
    value={
        "name": "welcome",
        "subject": "Welcome, {{ name }}!",
        "text": "Hello {{ name }}, your plan is {{ plan|default:'free' }}.",
        "html": "<p>Hello {{ name }}</p>",
    },
)
TEMPLATE_REPLACE_EXAMPLE = OpenApiExample(
    "A new wording",
    request_only=True,
    value={"subject": "Welcome aboard, {{ name }}!", "text": "Hello {{ name }}, glad you are here."},
)
