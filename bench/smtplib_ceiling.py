"""The ceiling: a plain smtplib loop over one persistent connection per process, building each message
with Python's email package. python -m bench.smtplib_ceiling PORT COUNT PROCESSES"""

import smtplib
import sys
from email.message import EmailMessage
from multiprocessing import Pool


def send(args: tuple[int, int, int]) -> None:
    port, start, count = args
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for n in range(start, start + count):
            message = EmailMessage()
            message["From"] = "Shop <shop@example.com>"
            message["To"] = "alice@example.org"
            message["Subject"] = "Your order"
            message["X-Bench-Id"] = f"ceiling-{n}"
            message.set_content("Thank you for your order.")
            smtp.send_message(message)


def main() -> None:
    port, count, processes = (int(a) for a in sys.argv[1:4])
    share = count // processes
    with Pool(processes) as pool:
        pool.map(send, [(port, p * share, share) for p in range(processes)])


if __name__ == "__main__":
    main()
