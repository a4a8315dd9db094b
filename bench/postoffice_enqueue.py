"""Enqueue N emails with django-post_office's public API; prints the elapsed seconds as JSON.

python -m bench.postoffice_enqueue N one|many [FIRST]   (ids po-FIRST... ; FIRST 0 if not given)

In the peer's Celery mode (BENCH_PO_CELERY_BROKER set) each send_many() also queues its delivery task."""

import json
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.postoffice_settings")
import django

django.setup()
from post_office import mail  # noqa: E402

if os.environ.get("BENCH_PO_CELERY_BROKER"):
    import bench.postoffice_celery  # noqa: F401 - the app post_office's tasks are queued with


def main() -> None:
    count, mode = int(sys.argv[1]), sys.argv[2]
    first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    kwargs = {"sender": "shop@example.com", "subject": "Your order", "message": "Thank you for your order."}
    started = time.perf_counter()
    if mode == "one":
        for n in range(count):
            mail.send(["alice@example.org"], headers={"X-Bench-Id": f"po-{first + n}"}, **kwargs)
    else:
        for start in range(0, count, 500):
            batch = range(start, min(count, start + 500))
            mail.send_many([{"recipients": ["alice@example.org"], "headers": {"X-Bench-Id": f"po-{first + n}"}, **kwargs}
                            for n in batch])  # fmt: skip
    print(json.dumps({"seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
