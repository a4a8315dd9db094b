"""gunicorn's settings: gunicorn reads this file from the working directory (make run, Docker, tests, bench)."""

import os

# A process per core runs the requests' Python (each holds its process's GIL); threads overlap their
# waits (the commit, Redis). Measured on 2 cores: fewer processes with more threads spent less CPU
# per request than 2 x cores + 1 processes, and kept the latency under load lower.
worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS", os.cpu_count() or 1))
threads = int(os.environ.get("WEB_THREADS", "8"))
