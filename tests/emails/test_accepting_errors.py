"""The accepting service raises the project's own errors, whatever the door: called directly, with plain
values, it refuses with InvalidFields, TooLarge or IdempotencyConflict, and nothing of DRF (issue 15)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from emails.errors import SENDER_NOT_ALLOWED, IdempotencyConflict, InvalidFields, TooLarge
from emails.models import Email, Template
from emails.services import api_key_create, email_create, email_fields, idempotent
from tests.processes import ROOT

pytestmark = pytest.mark.django_db

FIELDS = {"from_email": "Shop <shop@example.com>", "to": ["alice@example.org"], "subject": "Hi", "text": "Hello"}
# What a module of the service may not import: a web framework's errors, or the doors' own modules.
FORBIDDEN_IMPORTS = ("rest_framework", "django.http", "emails.exceptions", "emails.apis")
# Validating declares an email's fields with DRF's serializer fields, used as a validation library (the same
# declarations document the API's schema); what it raises is InvalidFields, as the tests below show.
USES_DRF_FOR_VALIDATION = {"validating.py"}


def test_an_unknown_template_is_invalid_fields_naming_template():
    api_key, _ = api_key_create(name="shop")
    fields = {key: value for key, value in FIELDS.items() if key not in ("subject", "text")}

    with pytest.raises(InvalidFields) as refused:
        email_create(api_key=api_key, template="welcome", context={"name": "Ann"}, **fields)

    assert refused.value.errors == {"template": ["No template named 'welcome'."]}
    assert refused.value.code is None
    assert not Email.objects.exists()


def test_another_keys_template_is_unknown_too():
    owner, _ = api_key_create(name="owner")
    other, _ = api_key_create(name="other")
    Template.objects.create(name="welcome", subject="Hi", text="Hello", api_key=owner)

    with pytest.raises(InvalidFields) as refused:
        email_create(api_key=other, template="welcome", from_email=FIELDS["from_email"], to=FIELDS["to"])

    assert list(refused.value.errors) == ["template"]


def test_a_foreign_sender_is_invalid_fields_naming_from_with_code_sender_not_allowed():
    api_key, _ = api_key_create(name="shop", senders=["example.com"])

    with pytest.raises(InvalidFields) as refused:
        email_create(api_key=api_key, **{**FIELDS, "from_email": "PayPal Security <security@paypal.com>"})

    assert list(refused.value.errors) == ["from"]
    [message] = refused.value.errors["from"]
    assert "'security@paypal.com'" in message
    assert refused.value.code == SENDER_NOT_ALLOWED
    assert not Email.objects.exists()


def test_an_email_over_the_size_limit_is_too_large(settings):
    settings.MAIL_MAX_EMAIL_BYTES = 100  # the 10 MB rule at a size a test can afford

    with pytest.raises(TooLarge) as refused:
        email_create(api_key=None, **{**FIELDS, "text": "x" * 101})

    assert refused.value.message == "The email is 101 bytes with its attachments; at most 100."
    assert not Email.objects.exists()


def test_a_reused_idempotency_key_with_another_request_is_an_idempotency_conflict():
    api_key, _ = api_key_create(name="shop")
    first = idempotent(api_key=api_key, key="order-1", request_hash="a", produce=lambda: (202, {"id": "1"}))

    with pytest.raises(IdempotencyConflict) as refused:
        idempotent(api_key=api_key, key="order-1", request_hash="b", produce=lambda: (202, {"id": "2"}))

    assert first == (202, {"id": "1"}, False)
    assert str(refused.value) == "This Idempotency-Key was used with a different request."


def test_the_validator_every_door_calls_raises_invalid_fields_with_plain_messages():
    with pytest.raises(InvalidFields) as refused:
        email_fields({"from": "Shop <shop@example.com>", "to": [], "subject": "Hi", "text": "Hello"})

    assert list(refused.value.errors) == ["to"]
    assert all(type(message) is str for message in refused.value.errors["to"])


def _messages(errors) -> list:
    """Every message in an InvalidFields' errors, however deep they nest."""
    if isinstance(errors, dict):
        return [message for value in errors.values() for message in _messages(value)]
    if isinstance(errors, list):
        return [message for value in errors for message in _messages(value)]
    return [errors]


BODY = {"from": "shop@example.com", "to": ["a@example.org"], "subject": "Hi"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (None, "non_field_errors"),
        (["an", "array"], "non_field_errors"),
        ({**BODY, "text": "x", "colour": "red"}, "colour"),
        ({**BODY, "text": 7}, "text"),
        ({**BODY, "text": "x", "attachments": [{"x": 1}]}, "attachments"),
        ({**BODY, "text": "x", "headers": {"Received": "from relay"}}, "headers"),
    ],
    ids=["null", "array", "unknown field", "not a string", "nested in a list", "nested in a map"],
)  # fmt: skip
def test_any_refused_body_is_invalid_fields_naming_the_field_with_plain_strings(body, field):
    with pytest.raises(InvalidFields) as refused:
        email_fields(body)

    assert field in refused.value.errors
    assert _messages(refused.value.errors)
    assert all(type(message) is str for message in _messages(refused.value.errors))


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize(
    "path",
    [*sorted((ROOT / "emails" / "services").glob("*.py")), ROOT / "emails" / "errors.py"],
    ids=lambda path: path.name,
)
def test_the_service_and_its_errors_import_nothing_of_a_door(path):
    forbidden_here = [
        name for name in FORBIDDEN_IMPORTS if not (name == "rest_framework" and path.name in USES_DRF_FOR_VALIDATION)
    ]
    wrong = {
        module
        for module in _imported_modules(path)
        if any(module == forbidden or module.startswith(f"{forbidden}.") for forbidden in forbidden_here)
    }

    assert not wrong
