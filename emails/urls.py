from django.urls import path

from emails import apis, suppression_apis, template_apis, webhook_apis

urlpatterns = [
    path("emails", apis.EmailCollectionApi.as_view(), name="email-collection"),
    path("emails/batch", apis.EmailBatchCreateApi.as_view(), name="email-batch"),
    path("emails/retry", suppression_apis.EmailRetryApi.as_view(), name="email-retry"),
    path("emails/<uuid:email_id>", apis.EmailDetailApi.as_view(), name="email-detail"),
    path("emails/<uuid:email_id>/resend", apis.EmailResendApi.as_view(), name="email-resend"),
    path("stats", apis.StatsApi.as_view(), name="stats"),
    path("webhooks", webhook_apis.WebhookCollectionApi.as_view(), name="webhook-collection"),
    path("webhooks/<uuid:webhook_id>", webhook_apis.WebhookDetailApi.as_view(), name="webhook-detail"),
    path(
        "webhooks/<uuid:webhook_id>/deliveries",
        webhook_apis.WebhookDeliveryListApi.as_view(),
        name="webhook-deliveries",
    ),
    path("templates", template_apis.TemplateCollectionApi.as_view(), name="template-collection"),
    path("templates/<str:name>", template_apis.TemplateDetailApi.as_view(), name="template-detail"),
    path("suppressions", suppression_apis.SuppressionCollectionApi.as_view(), name="suppression-collection"),
    path("suppressions/<path:address>", suppression_apis.SuppressionDetailApi.as_view(), name="suppression-detail"),
]
