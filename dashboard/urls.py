from django.urls import path

from dashboard import apis, views

app_name = "dashboard"
urlpatterns = [
    path("", views.dashboard, name="index"),
    path("data", apis.DashboardDataApi.as_view(), name="data"),
    path("api-keys", apis.DashboardApiKeyListApi.as_view(), name="api-keys"),
    path("emails", apis.DashboardEmailCreateApi.as_view(), name="email-create"),
    path("emails/<uuid:email_id>", apis.DashboardEmailProgressApi.as_view(), name="email-progress"),
]
