"""API keys: created here, shown once, stored as a hash."""

from __future__ import annotations

from emails.models import ApiKey


def api_key_create(*, name: str) -> tuple[ApiKey, str]:
    """Returns the stored key and the key itself, which is not stored and cannot be shown again."""
    key = ApiKey.generate()
    api_key = ApiKey.objects.create(name=name, key_hash=ApiKey.hash(key), prefix=key[:10])
    return api_key, key
