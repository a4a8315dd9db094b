from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from emails.services import api_key_create


class Command(BaseCommand):
    help = (
        "Creates an API key and prints it as the last line. Only its hash is stored: keep it now. "
        "--sender limits what it may send from; without it, it may send from any address."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="who or what the key is for")
        parser.add_argument(
            "--sender",
            action="append",
            default=[],
            dest="senders",
            metavar="DOMAIN_OR_ADDRESS",
            help="a domain (example.com: any address at exactly that domain, not its subdomains) or an address "
            "(ops@other.org) the key may send from, as From, Sender and envelope sender; repeat for more",
        )
        parser.add_argument(
            "--test",
            action="store_true",
            help="a test key: its emails go through the whole pipeline (validation, templates, statuses, webhooks) "
            "and end SENT by the built-in `test` provider, never handed to a real one",
        )

    def handle(self, *args, name: str, senders: list[str], test: bool, **options):
        try:
            api_key, key = api_key_create(name=name, senders=senders, test=test)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        if api_key.senders:
            self.stdout.write(f"It may send from: {', '.join(api_key.senders)}.")
        else:
            # On stderr, so that `| tail -1` still gets the key, and the warning is still seen.
            self.stderr.write(
                self.style.WARNING(
                    "This key may send from any address. Limit it with --sender DOMAIN_OR_ADDRESS "
                    "(or edit its senders in the admin)."
                )
            )
        if api_key.test:
            self.stdout.write("A test key: its emails are never handed to a provider (they end SENT by `test`).")
        self.stdout.write(f"Created API key {api_key.name!r} (id {api_key.id}). It is shown only once:")
        self.stdout.write(key)
