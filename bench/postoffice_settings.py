"""A minimal Django project for the peer, django-post_office, with its defaults (5 threads, batches of 100)."""

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
POST_OFFICE = {"BACKENDS": {"default": "django.core.mail.backends.smtp.EmailBackend"}, "LOG_LEVEL": 0}
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("SINK_PORT", "25"))
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
