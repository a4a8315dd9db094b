"""A bad MAIL_PROVIDERS stops start-up with a message naming the provider and the problem."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

BAD_CONFIGS = [
    ([], "non-empty JSON list"),
    ([{"backend": "smtp"}], "'name' is required"),
    ([{"name": "relay", "backend": "carrier-pigeon"}], "provider 'relay': unknown backend 'carrier-pigeon'"),
    ([{"name": "relay", "backend": "smtp", "port": 25}], "provider 'relay': unknown keys ['port']"),
    ([{"name": "relay", "backend": "smtp", "rate_limit": "fast"}], "provider 'relay': rate_limit must be a number"),
    ([{"name": "ses", "backend": "postmark"}], "provider 'ses': bad options"),
    ([{"name": "a", "backend": "smtp"}, {"name": "a", "backend": "console"}], "must be unique: ['a']"),
]


@pytest.mark.parametrize(("config", "message"), BAD_CONFIGS)
def test_check_fails_on_a_bad_provider(settings, config, message):
    settings.MAIL_PROVIDERS = config

    with pytest.raises(SystemCheckError) as error:
        call_command("check")

    assert message in str(error.value)


def test_check_passes_on_a_good_config(settings):
    settings.MAIL_PROVIDERS = [
        {"name": "relay", "backend": "smtp", "options": {"host": "mail.example.com", "port": 587}, "rate_limit": 14},
        {"name": "backup", "backend": "postmark", "options": {"server_token": "x"}, "priority": 2},
    ]

    call_command("check")
