from django.core.management.base import BaseCommand

from emails.services import api_key_create


class Command(BaseCommand):
    help = "Creates an API key and prints it as the last line. Only its hash is stored: keep it now."

    def add_arguments(self, parser):
        parser.add_argument("name", help="who or what the key is for")

    def handle(self, *args, name: str, **options):
        api_key, key = api_key_create(name=name)
        self.stdout.write(f"Created API key {api_key.name!r} (id {api_key.id}). It is shown only once:")
        self.stdout.write(key)
