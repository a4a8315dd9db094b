"""The Celery app of the peer's Celery mode (row 5's peer): django-post_office's own tasks, found in its
`post_office.tasks`, with the broker bench/postoffice_settings.py reads from BENCH_PO_CELERY_BROKER.

celery -A bench.postoffice_celery worker"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.postoffice_settings")

app = Celery("postoffice_bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
