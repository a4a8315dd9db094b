"""A bad MAIL_PROVIDERS stops start-up with a message naming the provider and the problem."""

import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from tests.processes import ROOT

BAD_CONFIGS = [
    ([], "non-empty JSON list"),
    ([{"backend": "smtp"}], "'name' is required"),
    ([{"name": "relay", "backend": "carrier-pigeon"}], "provider 'relay': unknown backend 'carrier-pigeon'"),
    ([{"name": "relay", "backend": "smtp", "port": 25}], "provider 'relay': unknown keys ['port']"),
    ([{"name": "relay", "backend": "smtp", "rate_limit": "fast"}], "provider 'relay': rate_limit must be a number"),
    ([{"name": "ses", "backend": "postmark"}], "provider 'ses': bad options"),
    ([{"name": "relay", "backend": "smtp", "options": {"hots": "x"}}], "provider 'relay': unknown options ['hots']"),
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


@pytest.mark.parametrize(
    ("command", "config", "message"),
    [
        (["manage.py", "check"], '[{"name": "relay", "backend": "smtp"', "MAIL_PROVIDERS is not valid JSON"),
        (["manage.py", "check"], '[{"name": "relay", "backend": "nope"}]', "provider 'relay': unknown backend 'nope'"),
        (
            ["-m", "celery", "-A", "mailservice", "worker"],
            '[{"name": "esp", "backend": "mailgun"}]',
            "provider 'esp': bad options",
        ),
    ],
    ids=["check, not JSON", "check, unknown backend", "worker, bad options"],
)
def test_a_process_refuses_to_start_on_a_bad_provider(command, config, message, tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mailservice.settings", "MAIL_PROVIDERS": config}
    output = tmp_path / "output.log"

    with output.open("w") as out:  # a file, not a pipe: a worker's pool processes may hold a pipe open
        result = subprocess.run([sys.executable, *command], env=env, cwd=ROOT, stdout=out, stderr=out, timeout=60)

    assert result.returncode != 0
    assert message in output.read_text()
