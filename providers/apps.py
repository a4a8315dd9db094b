from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


class ProvidersConfig(AppConfig):
    name = "providers"

    def ready(self) -> None:
        from providers.registry import parse_providers

        # Every process (gunicorn, worker, beat, manage.py) refuses to start on a bad MAIL_PROVIDERS:
        # Django runs system checks only for some management commands.
        parse_providers(settings.MAIL_PROVIDERS)
        checks.register(check_mail_providers)


def check_mail_providers(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """`manage.py check` reports a bad MAIL_PROVIDERS (also when a test overrides the setting)."""
    from providers.registry import parse_providers

    try:
        parse_providers(settings.MAIL_PROVIDERS)
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="providers.E001")]
    return []
