"""`manage.py consume_stream`: the Redis stream door (emails/stream_door.py), reading MAIL_STREAM."""

from __future__ import annotations

import os
import signal
import socket

from django.conf import settings
from django.core.management.base import BaseCommand

from emails.stream_door import GROUP, StreamDoor
from infra.redis import get_redis


class Command(BaseCommand):
    help = (
        'Reads the Redis stream MAIL_STREAM in the consumer group "mailservice": each entry (api_key, email, '
        "optionally idempotency_key) stored as POST /api/v1/emails stores one, and answered on <MAIL_STREAM>:results."
    )

    def handle(self, *args, **options):
        from infra.database import bound_every_query

        bound_every_query()  # a frozen database costs a batch seconds, then it is read again
        # A name per process: two processes never share one's pending entries. A dead one's are claimed after
        # MAIL_STREAM_CLAIM_IDLE by whichever consumer runs.
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        door = StreamDoor(get_redis(), stream=settings.MAIL_STREAM, consumer=consumer)
        for signum in (signal.SIGTERM, signal.SIGINT):
            # The batch in hand is stored, answered and acknowledged first; a read waits at most BLOCK_SECONDS.
            signal.signal(signum, lambda *_: door.stop())
        self.stdout.write(f"Consuming {settings.MAIL_STREAM} in group {GROUP} as {consumer}", ending="\n")
        self.stdout.flush()
        door.run()
