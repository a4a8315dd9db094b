"""Times the admin's email pages and the dashboard on the current database (a benchmark, not a test)."""

from __future__ import annotations

import statistics
import time
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from emails.models import Email
from providers.registry import parse_providers

TARGET_MS = 500
OPERATOR = "bench-operator"


class Command(BaseCommand):
    help = (
        "Times the admin changelist (first page, status and provider filters, recipient and id search), "
        "an email's page and the dashboard (page and refresh) in this process, on the current database "
        "(fill it first: manage.py generate_emails 1000000)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--runs", type=int, default=5, help="timed runs per page, after one warm-up")
        parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each page's slowest query")

    def handle(self, *args, runs: int, explain: bool, **options):
        newest = Email.objects.only("id", "recipients").order_by("-created_at").first()
        failed = Email.objects.filter(status=Email.Status.FAILED).only("id").order_by("-updated_at").first()
        if newest is None or failed is None:
            raise CommandError("no emails (or no failed one): run manage.py generate_emails first")
        call_command("collectstatic", interactive=False, verbosity=0)  # pages name their hashed static files
        provider = parse_providers(settings.MAIL_PROVIDERS)[0].name
        changelist = "/admin/emails/email/"
        pages = [
            ("changelist, first page", changelist),
            ("changelist, status FAILED", f"{changelist}?status__exact=FAILED"),
            ("changelist, status PENDING", f"{changelist}?status__exact=PENDING"),
            (f"changelist, provider {provider}", f"{changelist}?{urlencode({'provider': provider})}"),
            ("changelist, recipient search", f"{changelist}?{urlencode({'q': newest.recipients[0]})}"),
            ("changelist, id search", f"{changelist}?q={newest.id}"),
            ("email page (failed, with events)", f"{changelist}{failed.id}/change/"),
            ("dashboard page", "/dashboard/"),
            ("dashboard refresh (JSON)", "/dashboard/data"),
        ]
        total = Email.objects.count()
        self.stdout.write(f"{total} emails; {runs} runs per page after a warm-up, in-process (no HTTP), ms\n")
        self.stdout.write(f"{'page':40} {'median':>8} {'max':>8} {'queries':>8}")
        operator, _ = User.objects.get_or_create(username=OPERATOR, defaults={"is_staff": True, "is_superuser": True})
        slow = []
        try:
            with override_settings(ALLOWED_HOSTS=["testserver"]):
                client = Client()
                client.force_login(operator)
                for label, url in pages:
                    timings, queries = self._time(client, url, runs)
                    median, worst = statistics.median(timings), max(timings)
                    mark = "" if worst < TARGET_MS else f"  over {TARGET_MS} ms"
                    slow += [label] if mark else []
                    self.stdout.write(f"{label:40} {median:8.1f} {worst:8.1f} {len(queries):8}{mark}")
                    if explain:
                        self._explain(queries)
        finally:
            operator.delete()
        self.stdout.write(f"over {TARGET_MS} ms: {', '.join(slow)}" if slow else f"all under {TARGET_MS} ms")

    def _time(self, client: Client, url: str, runs: int) -> tuple[list[float], list[dict]]:
        timings = []
        for run in range(runs + 1):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise CommandError(f"{url} answered {response.status_code}")
            if run:  # the first run warms caches
                timings.append(elapsed)
        return timings, queries.captured_queries

    def _explain(self, queries: list[dict]) -> None:
        slowest = max(queries, key=lambda q: float(q["time"]))
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {slowest['sql']}")
            plan = "\n".join(f"      {row[0]}" for row in cursor.fetchall())
        self.stdout.write(f"    slowest query ({float(slowest['time']) * 1000:.1f} ms):\n{plan}")
