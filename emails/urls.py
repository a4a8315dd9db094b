from django.urls import path

from emails import apis

urlpatterns = [
    path("emails", apis.EmailCollectionApi.as_view(), name="email-collection"),
    path("emails/<uuid:email_id>", apis.EmailDetailApi.as_view(), name="email-detail"),
]
