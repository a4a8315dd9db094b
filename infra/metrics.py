"""Prometheus metrics. Counters live in PROMETHEUS_MULTIPROC_DIR, so figures from every gunicorn and
Celery process add up in /metrics; gauges are read from PostgreSQL and Redis at scrape time.

The directory may be shared by processes of several hosts or containers (docker-compose.yml: web, worker and
beat on one volume). Each process writes its own files, named by its process identifier: the process id alone
would not do, since every container numbers its processes from 1 and two of them would write one file. So
the identifier is the host name (a container's own) and the process id. Files of dead processes are kept:
their counts stay in the totals until the directory is emptied with every process stopped (`make run` does
at start; under Docker Compose the volume is a tmpfs that goes with the last container). prometheus_client's
mark_process_dead only removes live gauges' files, and there are none: gauges are computed when scraped."""

from __future__ import annotations

import os
import socket

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess, values

_HOST = socket.gethostname().replace("_", "-")  # "_" separates the parts of prometheus_client's file names


def process_identifier() -> str:
    """This process's name in PROMETHEUS_MULTIPROC_DIR: distinct among the processes running at once on every
    host that shares the directory (prometheus_client's one rule for it)."""
    return f"{_HOST}-{os.getpid()}"


if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
    # Before any metric is made: each reads this class when it is created.
    values.ValueClass = values.MultiProcessValue(process_identifier)

ACCEPTED = Counter("mailservice_emails_accepted_total", "Emails accepted by the API")
SENT = Counter("mailservice_emails_sent_total", "Emails a provider accepted", ["provider"])
FAILED = Counter("mailservice_emails_failed_total", "Emails that ended FAILED", ["provider"])
POSSIBLE_DUPLICATES = Counter(
    "mailservice_possible_duplicates_total",
    "Sends that may reach their recipients twice: a failed try that may have delivered (the connection dropped "
    "after the message was handed over), or a send whose outcome could not be recorded before its lease ran out",
    ["provider"],
)
WEBHOOK_DELIVERIES = Counter(
    "mailservice_webhook_deliveries_total",
    "Webhook deliveries by outcome: delivered (2xx), retry (to be tried again), failed (the last of the "
    "schedule failed), disabled (410 Gone, or the webhook was off)",
    ["outcome"],
)
SEND_SECONDS = Histogram(
    "mailservice_send_seconds",
    "Time a provider took to take (or refuse) one message",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def render(*collectors) -> bytes:
    """Every process's counters (the multiprocess directory), and what `collectors` read when scraped."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)
