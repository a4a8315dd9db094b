"""A task that holds its pool process far past any shutdown deadline, as a call blocked in a C library would:
loaded into a test's worker with `--include tests.stuck_task`."""

import time

from mailservice.celery import app

STARTED = "stuck task started"


@app.task(name="tests.stuck")
def stuck() -> None:
    print(STARTED, flush=True)
    while True:
        time.sleep(1)  # a loop: a signal's handler runs between sleeps, and none ends it
