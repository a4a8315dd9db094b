"""A minimal Django project for the peer, django-post_office, with its defaults (5 threads, batches of 100).

With BENCH_PO_CELERY_BROKER set, in its Celery mode (row 5's peer): each send_many() queues its send_queued_mail
task once committed, for a worker of bench/postoffice_celery.py.

It delivers over SMTP to SINK_PORT, or, with BENCH_POSTMARK_URL set, through anymail's Postmark backend to that
API URL (row 13's fake ESP, bench/fake_esp.py): the backend our own Postmark provider uses."""

import os

SECRET_KEY = "bench"
INSTALLED_APPS = ["django.contrib.contenttypes", "post_office"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("POSTOFFICE_DB", "postoffice_bench"),
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": 5432,
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
EMAIL_BACKEND = "post_office.EmailBackend"
POSTMARK_URL = os.environ.get("BENCH_POSTMARK_URL")
DELIVERY_BACKEND = (
    "anymail.backends.postmark.EmailBackend" if POSTMARK_URL else "django.core.mail.backends.smtp.EmailBackend"
)
CELERY_BROKER_URL = os.environ.get("BENCH_PO_CELERY_BROKER", "")
POST_OFFICE = {"BACKENDS": {"default": DELIVERY_BACKEND}, "LOG_LEVEL": 0, "CELERY_ENABLED": bool(CELERY_BROKER_URL)}
ANYMAIL = {"POSTMARK_SERVER_TOKEN": "bench", "POSTMARK_API_URL": POSTMARK_URL or ""}
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("SINK_PORT", "25"))
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
