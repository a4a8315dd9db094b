"""A Postmark API message (POST /email) read into an email's fields, and the accepting service's refusals
written as Postmark writes them, where clients parse them: anymail marks a recipient invalid on
`Invalid 'To' address: '<addr>'.` and rejected on `Found inactive addresses: <addr>, .... Inactive
recipients`. Protocol only: what an email may be is decided by emails.services.validating, once."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from emails.errors import InvalidFields
from emails.fields import MAX_ADDRESS_LENGTH, bare_address

# Postmark's names for our fields, in the order a refusal names the first bad one.
POSTMARK_NAMES = {
    "from": "From",
    "to": "To",
    "cc": "Cc",
    "bcc": "Bcc",
    "reply_to": "ReplyTo",
    "subject": "Subject",
    "text": "TextBody",
    "html": "HtmlBody",
    "headers": "Headers",
    "attachments": "Attachments",
    "tags": "Tag",
    "metadata": "Metadata",
    "message_stream": "MessageStream",
    "track_opens": "TrackOpens",
    "track_clicks": "TrackLinks",
}
ADDRESS_LISTS = {"To": "to", "Cc": "cc", "Bcc": "bcc", "ReplyTo": "reply_to"}
STRINGS = {"From": "from", "Subject": "subject", "TextBody": "text", "HtmlBody": "html"}
KNOWN = {*POSTMARK_NAMES.values()}
TRACK_LINKS = {"None": False, "HtmlAndText": True, "HtmlOnly": True, "TextOnly": True}
ATTACHMENT_NAMES = {"Name": "filename", "Content": "content", "ContentType": "content_type", "ContentID": "content_id"}
MAX_HEADERS = 50
MAX_ATTACHMENTS = 20
# A comma-separated list of at most MAIL_MAX_RECIPIENTS addresses, each at most MAX_ADDRESS_LENGTH, with ", "
# between them: longer is refused before it is split.
MAX_ADDRESS_LIST_LENGTH = 50 * (MAX_ADDRESS_LENGTH + 2)

# Postmark's ErrorCodes (https://postmarkapp.com/developer/api/overview#error-codes).
OK = 0
BAD_TOKEN = 10
MAINTENANCE = 100
INVALID_REQUEST = 300
SENDER_NOT_FOUND = 400
INVALID_JSON = 402
INACTIVE_RECIPIENT = 406
JSON_REQUIRED = 409
TOO_MANY_BATCH_MESSAGES = 410
RATE_LIMIT_EXCEEDED = 429

INACTIVE = "Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression."


class PostmarkRefusal(Exception):
    """A message refused before it reaches the validator: its ErrorCode and Message."""

    def __init__(self, message: str, error_code: int = INVALID_REQUEST) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code


def email_body(message: Any) -> dict[str, Any]:
    """A Postmark message (a parsed JSON object) as POST /api/v1/emails takes an email; raises PostmarkRefusal
    for what only Postmark's shapes can get wrong (a field unknown, of the wrong type, or too long to split).
    A field given as null is absent: Postmark's clients send every unused field so."""
    if not isinstance(message, dict):
        raise PostmarkRefusal("A message is a JSON object of Postmark's fields (From, To, Subject, ...).")
    given = {name: value for name, value in message.items() if value is not None}
    unknown = sorted(set(given) - KNOWN)
    if unknown:
        shown = ", ".join(repr(name[:100]) for name in unknown[:10])
        raise PostmarkRefusal(f"Unknown field(s): {shown}. This service takes: {', '.join(sorted(KNOWN))}.")
    body: dict[str, Any] = {}
    for name, value in given.items():
        if name in STRINGS:
            body[STRINGS[name]] = _string(name, value)
        elif name in ADDRESS_LISTS:
            body[ADDRESS_LISTS[name]] = _addresses(name, value)
    if "Headers" in given:
        body["headers"] = _headers(given["Headers"])
    if "Attachments" in given:
        body["attachments"] = _attachments(given["Attachments"])
    if given.get("Tag", "") != "":  # Postmark takes an empty Tag as none
        body["tags"] = [_string("Tag", given["Tag"])]
    if "Metadata" in given:
        body["metadata"] = given["Metadata"]
    if given.get("MessageStream", "") != "":
        body["message_stream"] = _string("MessageStream", given["MessageStream"])
    if "TrackOpens" in given:
        body["track_opens"] = given["TrackOpens"]  # (the validator takes true or false only)
    if "TrackLinks" in given:
        if not isinstance(given["TrackLinks"], str) or given["TrackLinks"] not in TRACK_LINKS:
            raise PostmarkRefusal(f"Invalid 'TrackLinks': one of {', '.join(TRACK_LINKS)}.")
        body["track_clicks"] = TRACK_LINKS[given["TrackLinks"]]
    return body


def _string(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise PostmarkRefusal(f"Invalid '{name}': must be a string.")
    return value


def _addresses(name: str, value: Any) -> list[str]:
    """`Name <addr>, "Last, First" <addr2>` split at the commas outside quotes, angle brackets and
    parentheses, in one pass; each address is then validated as the API validates one."""
    _string(name, value)
    if len(value) > MAX_ADDRESS_LIST_LENGTH:
        raise PostmarkRefusal(
            f"Invalid '{name}': at most {settings.MAIL_MAX_RECIPIENTS} addresses of at most {MAX_ADDRESS_LENGTH} "
            "characters each."
        )
    addresses, start, quoted, escaped, angle, comment = [], 0, False, False, False, 0
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or comment):
            escaped = True
        elif char == '"' and not comment:
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            comment += 1
        elif char == ")" and comment:
            comment -= 1
        elif comment:
            continue
        elif char == "<":
            angle = True
        elif char == ">":
            angle = False
        elif char == "," and not angle:
            addresses.append(value[start:index])
            start = index + 1
    addresses.append(value[start:])
    return [address.strip() for address in addresses if address.strip()]


def _headers(value: Any) -> dict[str, Any]:
    if not isinstance(value, list):
        raise PostmarkRefusal("Invalid 'Headers': a list of {Name, Value} objects.")
    if len(value) > MAX_HEADERS:
        raise PostmarkRefusal(f"Invalid 'Headers': at most {MAX_HEADERS}.")
    headers = {}
    for header in value:
        if not isinstance(header, dict) or set(header) - {"Name", "Value"} or not isinstance(header.get("Name"), str):
            raise PostmarkRefusal("Invalid 'Headers': each is an object with a Name and a Value (strings).")
        headers[header["Name"]] = header.get("Value")
    return headers


def _attachments(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise PostmarkRefusal("Invalid 'Attachments': a list of {Name, Content, ContentType, ContentID} objects.")
    if len(value) > MAX_ATTACHMENTS:
        raise PostmarkRefusal(f"Invalid 'Attachments': at most {MAX_ATTACHMENTS}.")
    attachments = []
    for attachment in value:
        if not isinstance(attachment, dict) or set(attachment) - set(ATTACHMENT_NAMES):
            raise PostmarkRefusal(
                "Invalid 'Attachments': each is an object with Name, Content (base64) and optionally ContentType "
                "and ContentID."
            )
        ours = {ATTACHMENT_NAMES[name]: v for name, v in attachment.items() if v is not None}
        content_id = ours.get("content_id")
        if isinstance(content_id, str):
            # Postmark takes `cid:logo.png` (anymail sends that form) as well as `logo.png`.
            ours["content_id"] = content_id.removeprefix("cid:")
        if content_id == "":
            del ours["content_id"]
        attachments.append(ours)
    return attachments


def refusal_message(refused: InvalidFields, body: dict[str, Any]) -> str:
    """The first bad field of `refused` as Postmark says it, naming the field by its Postmark name; an address
    as `Invalid 'To' address: '<addr>'.`, which anymail reads as that recipient refused."""
    errors = refused.errors
    name = next((field for field in POSTMARK_NAMES if field in errors), None)
    if name is None:  # non_field_errors, or a field unknown to both (never, as the body is ours)
        return f"Invalid request: {_first(errors)}"
    shown, problem = POSTMARK_NAMES[name], errors[name]
    if name in ("to", "cc", "bcc") and isinstance(problem, dict):  # by index: the address refused
        given = body[name][int(next(iter(problem)))]
        return f"Invalid '{shown}' address: '{_addr_spec(given)}'."
    if name == "from" and refused.code is None and isinstance(body.get("from"), str):
        return f"Invalid 'From' address: '{_addr_spec(body['from'])}'. {_first(problem)}"
    return f"Invalid '{shown}': {_first(problem)}"


def _addr_spec(address: str) -> str:
    """The bare address of what a client wrote, as anymail matches a refused recipient; cut when too long to
    be one."""
    if len(address) > MAX_ADDRESS_LENGTH:
        return address[:50] + "…"
    _, bracket, inside = address.rpartition("<")
    if bracket and inside.endswith(">"):  # what anymail takes for the address: the parsers refuse a bad one
        return inside[:-1].strip()
    return bare_address(address) or address.strip()


def _first(errors: Any) -> str:
    """The first message in an InvalidFields' errors, however deep they nest, with where it is."""
    if isinstance(errors, dict):
        key, value = next(iter(errors.items()))
        inner = _first(value)
        return inner if key == "non_field_errors" else f"{key}: {inner}"
    if isinstance(errors, list):
        return _first(errors[0])
    return str(errors)


def inactive_message(inactive: list[str], *, all_inactive: bool) -> str:
    listed = ", ".join(inactive)
    if all_inactive:
        return (
            "You tried to send to recipient(s) that have been marked as inactive. "
            f"Found inactive addresses: {listed}. {INACTIVE}"
        )
    return f"Message OK, but will not deliver to these inactive addresses: {listed}. {INACTIVE}"
