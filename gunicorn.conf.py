"""gunicorn's settings: gunicorn reads this file from the working directory (make run, Docker, tests, bench)."""

import os

# Threads overlap each request's waits (the commit, the publish to Redis); processes use the cores.
worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
