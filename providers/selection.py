"""Which provider sends the next attempt. Providers live once per process, so connections are reused."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from providers.base import Provider
from providers.registry import parse_providers


@cache
def all_providers() -> list[Provider]:
    return [Provider(config) for config in parse_providers(settings.MAIL_PROVIDERS)]


def choose_provider() -> Provider:
    """The provider for the next attempt: for now the first of MAIL_PROVIDERS by priority."""
    return all_providers()[0]


def close_all() -> None:
    for provider in all_providers():
        provider.close()


@receiver(setting_changed)
def _forget_providers(setting: str, **kwargs) -> None:
    """override_settings(MAIL_PROVIDERS=...) in tests must take effect."""
    if setting == "MAIL_PROVIDERS":
        close_all()
        all_providers.cache_clear()
