"""/health (the process runs), /health/ready (its dependencies answer) and /metrics."""

import hmac

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST

from mailservice import metrics
from mailservice.redis import get_redis


def health(request):
    return JsonResponse({"status": "ok"})


def ready(request):
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"unavailable: {type(exc).__name__}"
    try:
        get_redis().ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    ok = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", **checks}, status=200 if ok else 503)


def prometheus_metrics(request):
    """Open unless MAIL_METRICS_TOKEN is set; then a missing or wrong token is a 401 alike (which of the two it
    was tells a prober nothing), before any query is made."""
    token = settings.MAIL_METRICS_TOKEN
    if token and not _bears(request, token):
        response = HttpResponse("A valid metrics token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.render(), content_type=CONTENT_TYPE_LATEST)


def _bears(request, token: str) -> bool:
    """Whether the request's Authorization is `Bearer <token>`, compared in constant time (no timing tells how
    much of a guess was right)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
