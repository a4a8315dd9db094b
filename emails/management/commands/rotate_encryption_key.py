from django.core.management.base import BaseCommand, CommandError

from emails.services.key_rotation import BATCH, EncryptionNotConfigured, Progress, encryption_rotate
from infra.encryption import UndecryptableError


class Command(BaseCommand):
    help = (
        "Seals every stored email content, idempotency response, webhook payload and webhook secret with the newest "
        "key of MAIL_ENCRYPTION_KEYS (the first), clear ones included, in batches that lock only the rows they "
        "rewrite. Stopped, it is run again: what is sealed with the newest key already is only read. Once it has "
        "run, the older keys may be removed from MAIL_ENCRYPTION_KEYS."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=int, default=BATCH, help=f"rows per transaction (default {BATCH})")

    def handle(self, *args, batch: int, **options):
        if batch < 1:
            raise CommandError("--batch must be at least 1.")
        try:
            done = encryption_rotate(batch=batch, report=self._report)
        except (EncryptionNotConfigured, UndecryptableError) as exc:
            raise CommandError(str(exc)) from None
        left = sum(progress.changed_meanwhile for progress in done)
        if left:
            raise CommandError(f"{left} rows changed while they were being rewritten: run it again to seal them.")
        self.stdout.write("Every stored value is sealed with the newest key: the older keys may be removed.")

    def _report(self, progress: Progress) -> None:
        self.stdout.write(f"{progress.table}: {progress.read} read, {progress.rewritten} re-encrypted")
