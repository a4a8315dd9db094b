from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from django.views.defaults import page_not_found
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from emails import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("dashboard/", include("dashboard.urls")),
    path("dashboard", RedirectView.as_view(url="/dashboard/")),
    path("api/v1/", include("emails.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # Tracking webhooks of the ESPs: /webhooks/<esp>/tracking/ (anymail's views and checks).
    path("webhooks/", include("anymail.urls")),
    path("health", health.health, name="health"),
    path("health/ready", health.ready, name="health-ready"),
    path("metrics", health.prometheus_metrics, name="metrics"),
]


def not_found(request, exception):
    """An API client gets JSON for any unknown path under /api/ (a malformed id included), not an HTML page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


handler404 = not_found
