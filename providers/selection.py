"""Which provider sends the next attempt. Providers live once per process, so connections are reused."""

from __future__ import annotations

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from providers.base import Provider
from providers.registry import parse_providers

_providers: list[Provider] = []  # this process's providers, built on first use


def all_providers() -> list[Provider]:
    if not _providers:
        _providers.extend(Provider(config) for config in parse_providers(settings.MAIL_PROVIDERS))
    return _providers


def choose_provider() -> Provider:
    """The provider for the next attempt: for now the first of MAIL_PROVIDERS by priority."""
    return all_providers()[0]


def close_all() -> None:
    for provider in _providers:
        provider.close()


@receiver(setting_changed)
def _forget_providers(setting: str, **kwargs) -> None:
    """override_settings(MAIL_PROVIDERS=...) in tests must take effect."""
    if setting == "MAIL_PROVIDERS":
        close_all()
        _providers.clear()
