"""A key's own templates, made, replaced and deleted through the API, checked as the admin checks them. Shared
templates (no key) are an operator's: the API shows them and changes none."""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from emails.errors import InvalidFields
from emails.models import ApiKey, Template
from emails.services.accepting import template_errors

MAX_NAME_LENGTH = Template._meta.get_field("name").max_length
MAX_SUBJECT_LENGTH = Template._meta.get_field("subject").max_length
MAX_TEMPLATES_LISTED = 500


def _checked(*, subject: str, text: str, html: str) -> None:
    """Raises InvalidFields naming each part that does not compile, the bodies when there is neither, or the
    bodies when together they exceed an email's size: every email rendered from them would be refused."""
    errors = {part: [message] for part, message in template_errors(subject=subject, text=text, html=html).items()}
    size = len(text.encode()) + len(html.encode())
    if size > settings.MAIL_MAX_EMAIL_BYTES:
        message = f"text and html are {size} bytes together; an email has at most {settings.MAIL_MAX_EMAIL_BYTES}."
        for part, body in (("text", text), ("html", html)):
            if body:
                errors.setdefault(part, []).append(message)
    if errors:
        raise InvalidFields(errors)


def _taken(name: str) -> InvalidFields:
    return InvalidFields({"name": [f"You have a template named {name!r} already: replace it with PUT."]})


def template_create(*, api_key: ApiKey, name: str, subject: str, text: str = "", html: str = "") -> Template:
    """A new template of the key's. A shared one of the same name may exist: the key's own wins when it renders.
    Raises InvalidFields naming `name` (the key has one of that name) or the parts that are wrong."""
    _checked(subject=subject, text=text, html=html)
    if Template.objects.filter(api_key=api_key, name=name).exists():
        raise _taken(name)
    try:
        with transaction.atomic():
            return Template.objects.create(api_key=api_key, name=name, subject=subject, text=text, html=html)
    except IntegrityError:  # a create of the same name that committed between the check and the insert
        raise _taken(name) from None


def template_replace(*, api_key: ApiKey, name: str, subject: str, text: str = "", html: str = "") -> Template | None:
    """The key's own template `name` with new parts; None when the key has none of that name (a shared one is
    not the key's to change). Raises InvalidFields naming the parts that are wrong."""
    _checked(subject=subject, text=text, html=html)
    with transaction.atomic():
        # Locked: a delete at the same moment must not be undone by the save (which would insert the row again).
        template = Template.objects.select_for_update().filter(api_key=api_key, name=name).first()
        if template is None:
            return None
        template.subject, template.text, template.html = subject, text, html
        template.save(update_fields=["subject", "text", "html", "updated_at"])
        return template


def template_delete(*, api_key: ApiKey, name: str) -> bool:
    """Deletes the key's own template `name`; False when it has none (shared ones are an operator's)."""
    deleted, _ = Template.objects.filter(api_key=api_key, name=name).delete()
    return bool(deleted)


def template_get(*, api_key: ApiKey, name: str) -> Template | None:
    """The template `name` as the key renders it: its own, else the shared one; another key's is not there."""
    # PostgreSQL sorts NULLs last: the key's own first.
    visible = Template.objects.filter(Q(api_key=api_key) | Q(api_key__isnull=True), name=name)
    return visible.order_by("api_key_id").first()


def template_list(*, api_key: ApiKey) -> list[Template]:
    """The key's own templates and the shared ones, by name (a shared one beside the key's own of the same
    name, which is the one that renders), at most MAX_TEMPLATES_LISTED."""
    templates = Template.objects.filter(Q(api_key=api_key) | Q(api_key__isnull=True))
    return list(templates.order_by("name", "api_key_id")[:MAX_TEMPLATES_LISTED])
