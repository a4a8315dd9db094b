import os

from celery import Celery, bootsteps

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
