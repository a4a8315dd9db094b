from django.urls import path

from emails import apis

urlpatterns = [
    path("emails", apis.EmailCollectionApi.as_view(), name="email-collection"),
    path("emails/batch", apis.EmailBatchCreateApi.as_view(), name="email-batch"),
    path("emails/<uuid:email_id>", apis.EmailDetailApi.as_view(), name="email-detail"),
    path("emails/<uuid:email_id>/resend", apis.EmailResendApi.as_view(), name="email-resend"),
    path("stats", apis.StatsApi.as_view(), name="stats"),
]
