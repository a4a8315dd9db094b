"""What sending alone reaches on this machine: no queue, database, encryption or ingest, only the sends, as
many at once as our delivery has. Threads in each process, each with its own connection (kept open),
one message per call as our delivery sends.

python -m bench.send_ceiling KIND TARGET COUNT PROCESSES THREADS
  smtplib PORT       row 1's smtplib ceiling: a plain smtplib loop (run with THREADS 1: one persistent connection
                     per process), each message built with Python's email package
  postmark API_URL   anymail's Postmark backend, its session set up by our providers' read_environment_once()
  smtp PORT          our SMTP provider's backend (providers/smtp.py) with each message built by Django, as our
                     delivery's send step has it
  bytes PORT         smtplib.sendmail() of a message already serialized: the SMTP transaction alone, the least
                     a Python sender can spend per email"""

import sys
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool

MESSAGE = (b"From: Shop <shop@example.com>\r\nTo: alice@example.org\r\nSubject: Your order\r\nX-Bench-Id: ceiling-%d\r\n"
           b"\r\nThank you for your order.\r\n")  # fmt: skip


def _configure(**settings_) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(**settings_)
        django.setup()


def _backend_lane(open_backend):
    """A lane sending through the Django mail backend `open_backend()` returns, each message built by Django."""
    from django.core.mail import EmailMessage

    def lane(start: int, end: int) -> None:
        backend = open_backend()
        for n in range(start, end):
            message = EmailMessage("Your order", "Thank you for your order.", "Shop <shop@example.com>",
                                   ["alice@example.org"], headers={"X-Bench-Id": f"ceiling-{n}"})  # fmt: skip
            backend.send_messages([message])
        backend.close()

    return lane


def postmark_lane(api_url: str):
    _configure(ANYMAIL={"POSTMARK_SERVER_TOKEN": "bench", "POSTMARK_API_URL": api_url})
    from django.core.mail import get_connection

    from providers.base import read_environment_once

    def open_backend():
        backend = get_connection("anymail.backends.postmark.EmailBackend")
        backend.open()
        read_environment_once(backend)
        return backend

    return _backend_lane(open_backend)


def smtp_lane(port: str):
    _configure(EMAIL_HOST="127.0.0.1", EMAIL_PORT=int(port))
    from providers.smtp import EmailBackend

    def open_backend():
        backend = EmailBackend()
        backend.open()
        return backend

    return _backend_lane(open_backend)


def smtplib_lane(port: str):
    import smtplib
    from email.message import EmailMessage

    def lane(start: int, end: int) -> None:
        with smtplib.SMTP("127.0.0.1", int(port)) as smtp:
            for n in range(start, end):
                message = EmailMessage()
                message["From"] = "Shop <shop@example.com>"
                message["To"] = "alice@example.org"
                message["Subject"] = "Your order"
                message["X-Bench-Id"] = f"ceiling-{n}"
                message.set_content("Thank you for your order.")
                smtp.send_message(message)

    return lane


def bytes_lane(port: str):
    import smtplib

    def lane(start: int, end: int) -> None:
        with smtplib.SMTP("127.0.0.1", int(port)) as smtp:
            for n in range(start, end):
                smtp.sendmail("shop@example.com", ["alice@example.org"], MESSAGE % n)

    return lane


LANES = {"smtplib": smtplib_lane, "postmark": postmark_lane, "smtp": smtp_lane, "bytes": bytes_lane}


def send(args: tuple[str, str, int, int, int]) -> None:
    kind, target, first, count, threads = args
    lane = LANES[kind](target)
    bounds = [first + count * t // threads for t in range(threads + 1)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda t: lane(bounds[t], bounds[t + 1]), range(threads)))


def main() -> None:
    kind, target = sys.argv[1:3]
    count, processes, threads = (int(a) for a in sys.argv[3:6])
    bounds = [count * p // processes for p in range(processes + 1)]
    with Pool(processes) as pool:
        pool.map(send, [(kind, target, bounds[p], bounds[p + 1] - bounds[p], threads) for p in range(processes)])


if __name__ == "__main__":
    main()
