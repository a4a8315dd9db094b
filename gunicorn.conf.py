"""gunicorn's settings: gunicorn reads this file from the working directory (make run, Docker, tests, bench)."""

import os

# A process per core runs the requests' Python (each holds its process's GIL); threads overlap their
# waits (the commit, Redis). Measured on 2 cores: fewer processes with more threads spent less CPU
# per request than 2 x cores + 1 processes, and kept the latency under load lower.
worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS", os.cpu_count() or 1))
threads = int(os.environ.get("WEB_THREADS", "8"))
# Access lines without addresses: a path may hold one (infra/log_privacy.py).
logger_class = "infra.log_privacy.AccessLog"
# No child_exit hook calling prometheus_client's mark_process_dead: it removes only live gauges' files, and
# there are none (infra/metrics.py); a dead worker's counts stay in the totals, as they should.


def post_worker_init(worker):
    """Loads every view now (not on the first request), then moves all that is loaded out of the garbage
    collector's sight: it is never freed, and a full collection walking it took ~120 ms of a request's
    time every few hundred requests on 2 cores (with it frozen, ~20 ms).

    Bounds every query too: a frozen database must cost a request seconds, not a thread forever.

    Starts a template render process per thread (~20 MB each), kept for the renders: a render started in a
    request would wait ~0.1 s for it, out of the request's render seconds."""
    import gc

    from django.urls import get_resolver

    from emails import rendering
    from infra.database import bound_every_query

    bound_every_query()
    rendering.start(worker.cfg.threads)
    get_resolver().url_patterns  # noqa: B018 - imports the URLconf and every view
    gc.freeze()
