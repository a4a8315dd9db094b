"""/health (the process runs), /health/ready (its dependencies answer) and /metrics."""

import hmac

from django.conf import settings
from django.db import connection
from django.db.models import Min
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily

from emails.models import Email, WebhookMessage
from emails.queue import queue_depth
from emails.selectors import counts_by_status_at_scale, oldest_due_age_seconds
from infra import metrics
from infra.redis import get_redis


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
    return HttpResponse(metrics.render(QueueCollector()), content_type=CONTENT_TYPE_LATEST)


def _bears(request, token: str) -> bool:
    """Whether the request's Authorization is `Bearer <token>`, compared in constant time (no timing tells how
    much of a guess was right)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class QueueCollector:
    """Emails by status, queue depth and the oldest due email's wait, read when scraped."""

    def collect(self):
        # Above 200,000 emails, SENT and FAILED are the planner's estimates (an exact count of millions
        # of rows on every scrape takes ~250 ms); their _total counters stay exact.
        counts, _ = counts_by_status_at_scale()
        by_status = GaugeMetricFamily("mailservice_emails", "Emails by status", labels=["status"])
        for status, count in counts.items():
            by_status.add_metric([status], count)
        yield by_status
        yield GaugeMetricFamily(
            "mailservice_oldest_pending_age_seconds",
            "How long the longest-waiting due email has waited",
            value=oldest_due_age_seconds(Email.objects.all(), timezone.now()),
        )
        try:
            depth = queue_depth()
        except Exception:
            depth = float("nan")  # Redis down: say so rather than fail the scrape
        yield GaugeMetricFamily("mailservice_queue_depth", "Messages waiting in the broker", value=depth)
        yield GaugeMetricFamily(
            "mailservice_webhook_outbox_oldest_age_seconds",
            "How long the longest-waiting due webhook message has waited (its first try, or a retry that is due)",
            value=_oldest_due_webhook_message_age(timezone.now()),
        )


def _oldest_due_webhook_message_age(now) -> float:
    # Due messages, not every pending one: a receiver that is down keeps its retries scheduled hours ahead, which
    # is its owner's concern; what grows here is delivery falling behind. The partial index answers it at once.
    waiting = WebhookMessage.objects.filter(status=WebhookMessage.Status.PENDING, next_attempt_at__lte=now)
    oldest = waiting.aggregate(at=Min("next_attempt_at"))["at"]
    return max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
