"""The operators' admin, made for a table of millions of emails: a count that stops at a cap, filters
and searches that use an index, no query per row."""

from __future__ import annotations

import json
from functools import cached_property
from uuid import UUID

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html, format_html_join

from emails import services
from emails.errors import AcceptingError
from emails.fields import canonical_mailbox
from emails.models import ApiKey, Email, Suppression, Template, Webhook, WebhookAttempt, WebhookMessage
from emails.services.api_keys import MAX_SENDERS, SENDER_MAX_LENGTH, api_key_issue, api_key_senders
from emails.services.webhook_outbox import opened_payload
from providers.registry import parse_providers


class CappedCountPaginator(Paginator):
    """Counts at most CAP + 1 rows: a COUNT(*) over millions of rows takes seconds on every page.
    Past the cap there are no more pages (and no deep OFFSETs): a filter or a search narrows it."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.CAP + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > self.CAP


class ProviderFilter(admin.SimpleListFilter):
    """The configured providers, with no query: Django's own filter would SELECT DISTINCT the whole table."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request, model_admin):
        return [(p.name, p.name) for p in parse_providers(settings.MAIL_PROVIDERS)]

    def queryset(self, request, queryset):
        if self.value():
            # exclude(provider="") states the partial index's condition (email_provider_created).
            return queryset.filter(provider=self.value()).exclude(provider="")
        return queryset


def sandboxed_preview(html: str) -> str:
    """The html in an iframe that runs nothing and loads nothing: an empty sandbox (no scripts, forms,
    navigation or same-origin access), and a policy refusing remote images and styles, so a preview
    fires no tracking pixel and tells no third party the operator's address. srcdoc is escaped."""
    policy = (
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
    )
    return format_html(
        '<iframe class="html-preview" sandbox="" referrerpolicy="no-referrer" srcdoc="{}" title="html"></iframe>',
        policy + html,
    )


# An action handles at most this many emails: Django's "select all" would hand it every matching row.
ACTION_LIMIT = 1000

# The changelist reads these columns only: bodies and attachments can be large.
# `content`: where the subject is when the doors sealed it with the bodies (Email.content).
LIST_FIELDS = ["id", "status", "subject", "content", "to", "attempts", "provider", "last_error", "created_at"]


class EmailChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        return super().get_queryset(request, exclude_parameters).only(*LIST_FIELDS)

    def get_ordering(self, request, queryset):
        # By time only (sortable_by hides the other headers, but a URL could still ask for them).
        by_time = [f for f in super().get_ordering(request, queryset) if str(f).lstrip("-") == "created_at"]
        return [*(by_time or ["-created_at"]), "-pk"]


@admin.register(Email)
class EmailAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "subject", "recipient_list", "attempts", "provider", "last_error", "created_at"]
    list_filter = ["status", ProviderFilter, "created_at"]
    search_fields = ["id"]  # and recipients: see get_search_results
    search_help_text = "An email id, or a recipient's exact address."
    list_select_related = False  # nothing related is shown in the list
    paginator = CappedCountPaginator
    show_full_result_count = False  # would COUNT(*) the whole table on every page
    show_facets = admin.ShowFacets.NEVER  # a count per filter choice, over the whole table
    ordering = ["-created_at"]
    sortable_by = ["created_at"]  # sorting by another column sorts millions of rows on every page
    actions = ["resend", "retry_now", "cancel"]
    readonly_fields = [f.name for f in Email._meta.fields] + ["timeline", "html_preview"]
    fieldsets = [
        (None, {"fields": ["id", "status", "attempts", "last_error", "provider", "provider_message_id"]}),
        ("Timeline", {"fields": ["timeline"]}),
        ("Message", {"fields": ["from_email", "to", "cc", "bcc", "reply_to", "subject", "text", "html_preview",
                                "html", "headers"]}),
        ("Tracking", {"fields": ["api_key", "test", "tags", "metadata", "resent_from"]}),
        ("Times", {"fields": ["created_at", "send_at", "next_attempt_at", "lease_until", "sent_at", "updated_at",
                             "erased_at"]}),
    ]  # fmt: skip

    class Media:
        css = {"all": ["emails/admin.css"]}

    def get_changelist(self, request, **kwargs):
        return EmailChangeList

    @admin.display(description="to")
    def recipient_list(self, email: Email) -> str:
        return ", ".join(email.to)

    @admin.display(description="timeline")
    def timeline(self, email: Email) -> str:
        """Accepted, then each attempt's outcome and each provider event, in order (one query)."""
        steps = [(email.created_at, "accepted", "", "")]
        if email.send_at:
            steps.append((email.send_at, "scheduled", "", "not sent before this time"))
        steps += [(e.at, e.type, e.provider, e.detail) for e in email.events.all()]
        steps.sort(key=lambda step: step[0])
        rows = format_html_join(
            "",
            '<li class="timeline-{}"><time>{}</time> <b>{}</b> {} <span>{}</span></li>',
            ((kind, f"{at:%Y-%m-%d %H:%M:%S.%f}"[:-3], kind, f"via {provider}" if provider else "", detail)
             for at, kind, provider, detail in steps),
        )  # fmt: skip
        return format_html('<ol class="timeline">{}</ol>', rows)

    @admin.display(description="html preview")
    def html_preview(self, email: Email) -> str:
        return sandboxed_preview(email.html) if email.html else "-"

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(id=UUID(term)), False
        except ValueError:
            # Exact recipient match: served by the GIN index, unlike a LIKE over millions of rows.
            return queryset.filter(recipients__contains=[canonical_mailbox(term)]), False

    def has_add_permission(self, request) -> bool:
        return False  # emails come in through the API

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # history is not edited; the actions resend, retry or cancel

    def has_operate_permission(self, request) -> bool:
        """Who may resend, retry and cancel: staff with the change permission on emails (view-only
        staff see the list, not the actions)."""
        return request.user.has_perm("emails.change_email")

    def _selected_ids(self, request, queryset) -> list[UUID] | None:
        ids = list(queryset.values_list("id", flat=True)[: ACTION_LIMIT + 1])
        if len(ids) > ACTION_LIMIT:
            message = f"Select at most {ACTION_LIMIT} emails for an action; narrow the list with a filter or search."
            self.message_user(request, message, messages.ERROR)
            return None
        return ids

    @admin.action(description="Resend: a new email with the same content", permissions=["operate"])
    def resend(self, request, queryset):
        if (ids := self._selected_ids(request, queryset)) is None:
            return
        # The whole rows (the changelist reads only a few columns), in one query.
        originals = list(Email.objects.filter(id__in=ids).select_related("api_key"))
        refused = []
        for email in originals:
            try:
                services.email_resend(email=email)
            except AcceptingError:  # its key is revoked or may no longer send from its address (or a lower limit)
                refused.append(str(email.id))
        self.message_user(request, f"Queued {len(originals) - len(refused)} new email(s).", messages.SUCCESS)
        if refused:
            message = f"Not resent, as its API key would refuse it now: {', '.join(refused)}."
            self.message_user(request, message, messages.ERROR)

    @admin.action(description="Retry failed emails now", permissions=["operate"])
    def retry_now(self, request, queryset):
        if (ids := self._selected_ids(request, queryset)) is None:
            return
        count = services.emails_retry_now(ids=ids)
        self.message_user(request, f"Retrying {count} failed email(s).", messages.SUCCESS)

    @admin.action(description='Cancel pending emails (they end FAILED, "cancelled")', permissions=["operate"])
    def cancel(self, request, queryset):
        if (ids := self._selected_ids(request, queryset)) is None:
            return
        cancelled = services.emails_cancel(ids=ids)
        level = messages.SUCCESS if len(cancelled) == len(ids) else messages.WARNING
        skipped = len(ids) - len(cancelled)
        note = f"; {skipped} not PENDING, left as they were" if skipped else ""
        self.message_user(request, f"Cancelled {len(cancelled)} email(s){note}.", level)


class TemplateForm(forms.ModelForm):
    class Meta:
        model = Template
        fields = ["name", "api_key", "subject", "text", "html"]
        help_texts = {
            "name": "What clients give as the API's `template`: a slug, made of letters, digits, hyphens and "
            "underscores (order-shipped, welcome_2).",
        }

    def clean(self):
        data = super().clean()
        parts = {part: data.get(part, "") for part in ("subject", "text", "html")}
        for part, error in services.template_errors(**parts).items():
            self.add_error(part, error)
        return data


class KeysNotMadeInAPopup:
    """No "+" beside an API key field: a key is made on its own page, which shows it once, not in a popup that
    would close on it."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "api_key" and formfield is not None:
            formfield.widget.can_add_related = False
        return formfield


@admin.register(Template)
class TemplateAdmin(KeysNotMadeInAPopup, admin.ModelAdmin):
    form = TemplateForm
    list_display = ["name", "owner", "subject", "updated_at"]
    list_select_related = ["api_key"]
    search_fields = ["name", "subject"]
    readonly_fields = ["html_preview", "updated_at"]
    # The owner is the API key that may render it; empty: every key may (its own of the same name wins).
    fields = ["name", "api_key", "subject", "text", "html", "html_preview", "updated_at"]
    ordering = ["name"]

    class Media:
        css = {"all": ["emails/admin.css"]}

    @admin.display(description="owner", ordering="api_key__name")
    def owner(self, template: Template) -> str:
        return template.api_key.name if template.api_key else "shared"

    @admin.display(description="html preview (unrendered)")
    def html_preview(self, template: Template) -> str:
        return sandboxed_preview(template.html) if template.html else "-"


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    class Form(forms.ModelForm):
        # One per line (commas and spaces separate too), normalised as `create_api_key --sender` stores them.
        senders = forms.CharField(
            required=False,
            max_length=MAX_SENDERS * (SENDER_MAX_LENGTH + 2),  # bounded before it is split and parsed
            widget=forms.Textarea(attrs={"rows": 4}),
            help_text="Domains (example.com: any address at exactly that domain, not its subdomains) and "
            "addresses (ops@other.org) this key may send from, as the From, Sender and envelope sender; one per "
            "line. Empty: any address. A web process may use the old list for up to 10 seconds.",
        )

        class Meta:
            model = ApiKey
            fields = ["name", "senders"]

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.initial["senders"] = "\n".join(self.initial.get("senders") or [])

        def clean_senders(self) -> list[str]:
            return api_key_senders(self.cleaned_data["senders"].replace(",", " ").split())

    form = Form
    list_display = ["name", "prefix", "sender_list", "test", "created_at", "revoked_at"]
    readonly_fields = ["key_hash", "prefix", "test", "created_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(description="senders")
    def sender_list(self, api_key: ApiKey) -> str:
        return ", ".join(api_key.senders) or "any address"

    def get_fields(self, request, obj=None):
        if obj is None:  # adding: the key itself is made on save
            return ["name", "senders"]
        return super().get_fields(request, obj)

    def save_model(self, request, obj, form, change) -> None:
        if change:
            super().save_model(request, obj, form, change)
        else:
            # Kept on this instance for response_add() only: never stored, logged or put in a message (the
            # session and cookies would keep it).
            obj.key_shown_once = api_key_issue(obj)

    def response_add(self, request, obj, post_url_continue=None):
        """The new key, shown once to the operator who made it, on a page no cache keeps."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API key made",
            "api_key": obj,
            "key": obj.key_shown_once,
            "is_popup": IS_POPUP_VAR in request.POST,
        }
        response = TemplateResponse(request, "admin/emails/apikey/key_made.html", context)
        add_never_cache_headers(response)
        return response

    # Revoking changes the key: a user who may only view keys sees no action (Django filters actions by these).
    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


@admin.register(Suppression)
class SuppressionAdmin(KeysNotMadeInAPopup, admin.ModelAdmin):
    """A suppression leaves the address out of one key's emails, or (no key) out of every key's."""

    class Form(forms.ModelForm):
        def clean_address(self) -> str:
            # Send-time checks compare canonical addresses; cleaned before the form checks that the
            # (key, address) pair is new, so a differently written duplicate is an error, not a 500.
            return canonical_mailbox(self.cleaned_data["address"])

    form = Form
    list_display = ["address", "api_key", "reason", "created_at", "detail"]
    list_filter = ["reason", "api_key"]  # by key; its empty choice: the suppressions for every key
    list_select_related = ["api_key"]
    search_fields = ["=address"]
    fields = ["address", "api_key", "reason", "detail", "email", "created_at"]
    readonly_fields = ["email", "created_at"]
    ordering = ["-created_at"]


class ReadOnly:
    """Made and changed through the API and by the workers only: the admin shows."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Deleting here would skip what the API's delete does (pending messages disabled) and lose the history.
        return False


@admin.register(Webhook)
class WebhookAdmin(ReadOnly, admin.ModelAdmin):
    """A key's webhooks; the secret is never shown (it is the key's, shown once when the webhook was made)."""

    list_display = ["receiver", "api_key", "active", "disabled_reason", "created_at"]
    list_filter = ["active"]
    list_select_related = ["api_key"]
    search_fields = ["=id", "url"]
    fields = ["id", "api_key", "url", "events", "active", "disabled_reason", "created_at", "latest_messages"]
    readonly_fields = fields
    ordering = ["-created_at"]

    @admin.display(description="receiver")
    def receiver(self, webhook: Webhook) -> str:
        """The URL without its query: a receiver's token often rides there, and a list is seen over shoulders."""
        return webhook.url.split("?", 1)[0] + ("?…" if "?" in webhook.url else "")

    @admin.display(description="latest messages")
    def latest_messages(self, webhook: Webhook) -> str:
        """Its 20 latest events, linked (the message list, filtered by webhook, has them all)."""
        latest = webhook.messages.only("id", "type", "status", "attempts", "created_at").order_by("-created_at")
        rows = format_html_join(
            "",
            '<li><a href="{}">{}</a> {} {}, {} attempt(s), {}</li>',
            ((reverse("admin:emails_webhookmessage_change", args=[m.id]), m.id, m.type, m.status, m.attempts,
              f"{m.created_at:%Y-%m-%d %H:%M:%S}") for m in latest[:20]),
        )  # fmt: skip
        return format_html("<ol>{}</ol>", rows) if rows else "-"


class WebhookAttemptInline(ReadOnly, admin.TabularInline):
    model = WebhookAttempt
    fields = ["at", "status_code", "error", "duration_ms"]
    readonly_fields = fields
    ordering = ["-at"]
    extra = 0
    can_delete = False


@admin.register(WebhookMessage)
class WebhookMessageAdmin(ReadOnly, admin.ModelAdmin):
    """The outbox: each event for one webhook, its status and its attempts."""

    list_display = ["id", "type", "status", "attempts", "webhook", "created_at", "delivered_at"]
    list_filter = ["status"]
    list_select_related = ["webhook"]
    search_fields = ["=id", "=webhook__id", "=email__id"]
    search_help_text = "A message's, webhook's or email's id."
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fields = ["id", "webhook", "email", "type", "status", "attempts", "next_attempt_at", "lease_until", "created_at",
              "delivered_at", "body"]  # fmt: skip
    readonly_fields = fields
    ordering = ["-created_at"]
    inlines = [WebhookAttemptInline]

    @admin.display(description="Payload")
    def body(self, message: WebhookMessage) -> str:
        return format_html("<pre>{}</pre>", json.dumps(opened_payload(message.payload), ensure_ascii=False, indent=2))
