"""A provider whose send kills the worker process for one recipient, as an out-of-memory kill or a crash in a
C extension would: Django's SMTP backend (to a test's sink) for every other message."""

import os
import signal
import time

from django.core.mail.backends import smtp

POISON = "poison@example.org"


class EmailBackend(smtp.EmailBackend):
    def send_messages(self, email_messages):
        for message in email_messages:
            if POISON in message.recipients():
                time.sleep(0.3)  # a while into the send, as a process grows out of memory
                os.kill(os.getpid(), signal.SIGKILL)
        return super().send_messages(email_messages)
