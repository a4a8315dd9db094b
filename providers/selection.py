"""Which provider sends next: the lowest priority whose breaker lets it, equal priorities by weight.

Providers live once per process, so their connections and round-robin state are reused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from itertools import groupby

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from providers import circuit
from providers.base import Provider
from providers.registry import parse_providers

# Each sending thread has its own providers (an SMTP connection serves one sender at a time),
# lowest priority first, built on first use; all of them are listed for close_all().
_local = threading.local()
_all: list[list[Provider]] = []
_lock = threading.Lock()


def all_providers() -> list[Provider]:
    providers = getattr(_local, "providers", None)
    if providers is None:
        providers = [Provider(config) for config in parse_providers(settings.MAIL_PROVIDERS)]
        with _lock:
            _all.append(providers)
        _local.providers = providers
    return providers


def _pick_by_weight(group: list[Provider]) -> Provider:
    """Smooth weighted round-robin (as nginx does): exact ratios, evenly interleaved, no randomness."""
    total = sum(p.config.weight for p in group)
    for provider in group:
        provider.current_weight += provider.config.weight
    chosen = max(group, key=lambda p: p.current_weight)
    chosen.current_weight -= total
    return chosen


# Marks a provider's cached permit as out of date after a failure (threads of one batch share `permits`).
STALE = object()


def providers_in_order(permits: dict[str, circuit.Permit]) -> Iterator[tuple[Provider, circuit.Permit]]:
    """Yields the providers to try for one attempt, best first, each with its breaker's permit.

    The breaker is asked only for the provider about to be tried, so a half-open breaker's
    single probe is never claimed by a provider that is then not used. A closed breaker's permit
    is kept in `permits` (one batch's), so the next sends of the batch need not ask again.
    """
    for _, members in groupby(all_providers(), key=lambda p: p.config.priority):
        group = list(members)
        while group:
            provider = _pick_by_weight(group) if len(group) > 1 else group[0]
            group.remove(provider)
            permit = permits.get(provider.name)
            if not isinstance(permit, circuit.Permit):  # not asked yet in this batch, or STALE
                permit = circuit.allow(provider.name)
                if permit.allowed and not permit.probe and not permit.failures:
                    # setdefault: a STALE mark set meanwhile by another thread's failure must win.
                    permits.setdefault(provider.name, permit)
            if permit.allowed:
                yield provider, permit


def close_all() -> None:
    with _lock:
        for providers in _all:
            for provider in providers:
                provider.close()


@receiver(setting_changed)
def _forget_providers(setting: str, **kwargs) -> None:
    """override_settings(MAIL_PROVIDERS=...) in tests must take effect, in every thread."""
    global _local
    if setting == "MAIL_PROVIDERS":
        close_all()
        with _lock:
            _all.clear()
        _local = threading.local()
