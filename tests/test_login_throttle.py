"""Login throttling (django-axes): the attack replayed is guessing an admin password, 30 tries in a row. After 5
failed logins from one client address, logins from it are refused for 15 minutes, the right password included."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.utils import timezone

from tests.test_deploy_check import ThroughTlsProxy, collect_static, staff_user, web_behind_tls_proxy

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def static_root(tmp_path_factory) -> str:
    return collect_static(tmp_path_factory)


@pytest.fixture
def operator(db) -> User:
    return User.objects.create_superuser("operator", password=PASSWORD)


def log_in(client, password: str, address: str, **headers: str):
    return client.post(
        "/admin/login/?next=/admin/", {"username": "operator", "password": password}, REMOTE_ADDR=address, **headers
    )


def test_five_wrong_admin_passwords_lock_that_address_out_even_for_the_right_one(client, operator):
    for _ in range(4):
        assert log_in(client, "guess", "203.0.113.7").status_code == 200  # the form again, with its error
    assert log_in(client, "guess", "203.0.113.7").status_code == 429  # the 5th failure locks

    refused = log_in(client, PASSWORD, "203.0.113.7")
    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session

    assert log_in(client, PASSWORD, "198.51.100.9").status_code == 302  # another address still logs in
    assert client.session["_auth_user_id"] == str(operator.pk)


def test_the_lockout_is_per_address_whatever_user_name_is_sprayed(client, operator):
    for name in ["admin", "root", "operator", "staff", "ops"]:
        client.post("/admin/login/", {"username": name, "password": "guess"}, REMOTE_ADDR="203.0.113.7")
    assert log_in(client, PASSWORD, "203.0.113.7").status_code == 429


@pytest.mark.parametrize(
    ("wait", "status"), [(timedelta(minutes=14, seconds=59), 429), (timedelta(minutes=15, seconds=1), 302)]
)
def test_the_lockout_lasts_15_minutes(client, operator, wait, status):
    """From the last refused try: each try while locked out (counted as a failure) starts the 15 minutes again."""
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(5):
            log_in(client, "guess", "203.0.113.7")
        clock.shift(wait)
        assert log_in(client, PASSWORD, "203.0.113.7").status_code == status


def test_trying_again_while_locked_out_keeps_the_lock(client, operator):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(5):
            log_in(client, "guess", "203.0.113.7")
        clock.shift(timedelta(minutes=10))
        assert log_in(client, PASSWORD, "203.0.113.7").status_code == 429
        clock.shift(timedelta(minutes=10))
        assert log_in(client, PASSWORD, "203.0.113.7").status_code == 429


def test_a_forged_x_forwarded_for_does_not_escape_the_lockout_without_a_proxy(client, operator):
    """Not behind MAIL_BEHIND_TLS_PROXY, the header is the client's own: only the connection's address counts."""
    for forged in range(5):
        log_in(client, "guess", "203.0.113.7", HTTP_X_FORWARDED_FOR=f"192.0.2.{forged}")
    assert log_in(client, PASSWORD, "203.0.113.7", HTTP_X_FORWARDED_FOR="192.0.2.200").status_code == 429


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_behind_the_tls_proxy_the_address_is_the_one_the_proxy_appended(services, static_root):
    """Every request comes from the proxy's address; the client is the last X-Forwarded-For entry. Entries the
    client sent before it are forged, and rotating them escapes nothing."""
    staff_user("operator", PASSWORD)
    browser = ThroughTlsProxy(web_behind_tls_proxy(services, static_root), "mail.example.com")

    for forged in range(5):
        browser.log_in("operator", "guess", client="203.0.113.7", forwarded_for=f"192.0.2.{forged}")
    refused = browser.log_in("operator", PASSWORD, client="203.0.113.7", forwarded_for="192.0.2.200")
    assert refused.status_code == 429

    assert browser.log_in("operator", PASSWORD, client="198.51.100.9").status_code == 302
