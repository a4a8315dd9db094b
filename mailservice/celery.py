import os

from celery import Celery, bootsteps, signals
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailservice.settings")

app = Celery("mailservice")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class CheckProviders(bootsteps.Step):
    """A worker with a bad MAIL_PROVIDERS must not start. Celery logs and ignores errors raised
    while it sets Django up, so the configuration is checked again here, where an error is fatal."""

    def __init__(self, parent, **kwargs):
        from django.conf import settings

        from providers.registry import parse_providers

        parse_providers(settings.MAIL_PROVIDERS)
        super().__init__(parent, **kwargs)


app.steps["worker"].add(CheckProviders)


@signals.worker_init.connect  # a solo or threads pool runs tasks in the worker's own process
@signals.worker_process_init.connect  # each prefork pool process
@signals.beat_init.connect
def bound_queries(**kwargs) -> None:
    """A frozen database fails a task's query in seconds instead of holding its process forever."""
    from infra.database import bound_every_query

    bound_every_query()


@signals.task_prerun.connect
def close_broken_connections(**kwargs) -> None:
    """What Django does at each request: a connection an earlier task found broken is closed, and the
    next query checks the one it reuses (settings: CONN_HEALTH_CHECKS, and CELERY_DB_REUSE_MAX, which
    keeps Celery from reconnecting for every task)."""
    close_old_connections()
