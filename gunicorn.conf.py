"""gunicorn's settings: gunicorn reads this file from the working directory (make run, Docker, tests, bench)."""

import os

# Processes use the cores (a request's Python work holds one process's GIL); a second thread in each
# overlaps a request's waits (the commit, Redis). gunicorn's advice: 2 x cores + 1 processes.
worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS", 2 * (os.cpu_count() or 1) + 1))
threads = int(os.environ.get("WEB_THREADS", "2"))
