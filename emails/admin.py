from uuid import UUID

from django.contrib import admin, messages
from django.utils import timezone

from emails import services
from emails.models import ApiKey, Email, EmailEvent, Suppression


class EmailEventInline(admin.TabularInline):
    model = EmailEvent
    extra = 0
    can_delete = False
    fields = ["at", "type", "provider", "detail"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Email)
class EmailAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "subject", "recipient_list", "attempts", "provider", "last_error", "created_at"]
    list_filter = ["status", "provider", "created_at"]
    search_fields = ["id"]  # and recipients: see get_search_results
    search_help_text = "An email id, or a recipient's exact address."
    list_select_related = ["api_key"]
    date_hierarchy = None
    ordering = ["-created_at"]
    inlines = [EmailEventInline]
    actions = ["resend", "retry_now"]
    readonly_fields = [f.name for f in Email._meta.fields]
    fieldsets = [
        (None, {"fields": ["id", "status", "attempts", "last_error", "provider", "provider_message_id"]}),
        ("Message", {"fields": ["from_email", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "headers"]}),
        ("Tracking", {"fields": ["api_key", "tags", "metadata", "resent_from"]}),
        ("Times", {"fields": ["created_at", "send_at", "next_attempt_at", "lease_until", "sent_at", "updated_at"]}),
    ]

    @admin.display(description="to")
    def recipient_list(self, email: Email) -> str:
        return ", ".join(email.to)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(id=UUID(term)), False
        except ValueError:
            # Exact recipient match: served by the GIN index, unlike a LIKE over millions of rows.
            return queryset.filter(recipients__contains=[term.lower()]), False

    def has_add_permission(self, request) -> bool:
        return False  # emails come in through the API

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # history is not edited; the actions resend or retry

    @admin.action(description="Resend: a new email with the same content")
    def resend(self, request, queryset):
        for email in queryset:
            services.email_resend(email=email)
        self.message_user(request, f"Queued {queryset.count()} new email(s).", messages.SUCCESS)

    @admin.action(description="Retry failed emails now")
    def retry_now(self, request, queryset):
        count = services.emails_retry_now(ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"Retrying {count} failed email(s).", messages.SUCCESS)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "created_at", "revoked_at"]
    readonly_fields = ["key_hash", "prefix", "created_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False  # keys are created with `manage.py create_api_key`, which shows the key once

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    list_display = ["address", "reason", "created_at", "detail"]
    list_filter = ["reason"]
    search_fields = ["=address"]
    fields = ["address", "reason", "detail", "email", "created_at"]
    readonly_fields = ["email", "created_at"]
    ordering = ["-created_at"]

    def save_model(self, request, obj, form, change):
        obj.address = obj.address.strip().lower()  # send-time checks compare bare, lower-cased addresses
        super().save_model(request, obj, form, change)
