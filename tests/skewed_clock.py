"""`python -m tests.skewed_clock SECONDS celery ARGS...`: runs Celery with this process's clock (time.time(),
datetime.now(), and so its forked children's) SECONDS ahead of the machine's, as on a host whose clock is off.
time.monotonic() is left alone, as it is on such a host."""

import sys
from datetime import UTC, datetime, timedelta

import time_machine


def main() -> None:
    skew = float(sys.argv[1])
    time_machine.travel(datetime.now(UTC) + timedelta(seconds=skew), tick=True).start()
    from celery.__main__ import main as celery

    sys.argv = ["celery", *sys.argv[2:]]
    celery()


if __name__ == "__main__":
    main()
