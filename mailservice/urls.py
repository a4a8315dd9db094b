from django.contrib import admin
from django.urls import include, path

from emails import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("emails.urls")),
    # Tracking webhooks of the ESPs: /webhooks/<esp>/tracking/ (anymail's views and checks).
    path("webhooks/", include("anymail.urls")),
    path("health", health.health, name="health"),
    path("health/ready", health.ready, name="health-ready"),
]
