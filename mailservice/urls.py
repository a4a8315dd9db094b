import sys

from django.contrib import admin
from django.http import HttpResponse, JsonResponse
from django.template import loader
from django.urls import include, path
from django.views import defaults
from django.views.generic import RedirectView, TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.views import APIView

from emails import health, postmark
from emails.exceptions import DATABASE_ERRORS, RETRY_AFTER_SECONDS, DatabaseUnavailable, log_unavailable
from emails.webhooks import tracking_webhook_routes

urlpatterns = [
    path("", TemplateView.as_view(template_name="landing.html"), name="landing"),
    path("admin/", admin.site.urls),
    path("dashboard/", include("dashboard.urls")),
    path("dashboard", RedirectView.as_view(url="/dashboard/")),
    path("api/v1/", include("emails.urls")),
    # Postmark's API at the root, where its clients expect it (their base URL swapped for ours).
    path("email", postmark.PostmarkEmailApi.as_view(), name="postmark-email"),
    path("email/batch", postmark.PostmarkBatchApi.as_view(), name="postmark-email-batch"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # Tracking webhooks of the configured ESPs, /webhooks/<esp>/tracking/ (anymail's views and checks), only
    # with MAIL_WEBHOOK_SECRET; never anymail's inbound routes. Built when this module is imported.
    path("webhooks/", include(tracking_webhook_routes())),
    path("health", health.health, name="health"),
    path("health/ready", health.ready, name="health-ready"),
    path("metrics", health.prometheus_metrics, name="metrics"),
]


def not_found(request, exception):
    """An API client gets JSON for any unknown path under /api/ (a malformed id included), not an HTML page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


handler404 = not_found


def server_error(request):
    """Django's 500 page, except for a database outage: a 503 with Retry-After, in JSON for the API and
    DRF's views (the dashboard's JSON), else templates/503.html. Django calls it while handling the exception
    (from a view or a middleware, e.g. saving the session), so sys.exc_info() holds it."""
    exc = sys.exc_info()[1]
    if not isinstance(exc, DATABASE_ERRORS):
        return defaults.server_error(request)
    log_unavailable(exc)
    view = request.resolver_match.func if request.resolver_match else None
    if request.path.startswith("/api/") or issubclass(getattr(view, "view_class", object), APIView):
        response = JsonResponse({"detail": DatabaseUnavailable.default_detail}, status=503)
    else:
        # Without the request: a context processor would read the user, from the database.
        response = HttpResponse(loader.render_to_string("503.html"), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


handler500 = server_error
