from django.apps import AppConfig
from django.core import checks


class ProvidersConfig(AppConfig):
    name = "providers"

    def ready(self) -> None:
        checks.register(check_mail_providers)


def check_mail_providers(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """`manage.py check` (and every worker start) fails on a bad MAIL_PROVIDERS."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from providers.registry import parse_providers

    try:
        parse_providers(settings.MAIL_PROVIDERS)
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="providers.E001")]
    return []
