from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from emails import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("emails.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # Tracking webhooks of the ESPs: /webhooks/<esp>/tracking/ (anymail's views and checks).
    path("webhooks/", include("anymail.urls")),
    path("health", health.health, name="health"),
    path("health/ready", health.ready, name="health-ready"),
    path("metrics", health.prometheus_metrics, name="metrics"),
]
