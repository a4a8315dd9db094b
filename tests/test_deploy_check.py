"""A deployment's settings: `check --deploy` is clean with the documented production variables, and with DEBUG off
no process starts without a SECRET_KEY (the attack: forging sessions and signed cookies with a known default key).

The refusals run in a copy of the checkout with no var/secret_key, as a fresh clone is: this checkout may hold the
key `make run` made, which the settings would rightly find."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User

from tests.processes import BIN, ROOT, fresh_clone
from tests.sink import free_port


def production_env(checkout: Path, **overrides: str) -> dict[str, str]:
    """This process's environment (the test database and Redis) as a deployment would have it: DEBUG off, no
    SECRET_KEY, the code of `checkout` first on the path."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("SECRET_KEY", "DEBUG"))}
    env.update(DJANGO_SETTINGS_MODULE="mailservice.settings", DEBUG="0", PYTHONPATH=str(checkout))
    return {**env, **overrides}


def run(args: list[str], checkout: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=checkout, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return fresh_clone(tmp_path_factory.mktemp("clone"))


def test_check_deploy_passes_with_the_documented_production_variables(clone):
    env = production_env(
        clone, SECRET_KEY=secrets.token_urlsafe(50), MAIL_BEHIND_TLS_PROXY="1", ALLOWED_HOSTS="mail.example.com"
    )
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], clone, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_on_plain_http_settings(clone):
    """The test above passes because of MAIL_BEHIND_TLS_PROXY, not because the check is silenced."""
    env = production_env(clone, SECRET_KEY=secrets.token_urlsafe(50))
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], clone, env)
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


def _refuses_naming_secret_key(result: subprocess.CompletedProcess, checkout: Path) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "ImproperlyConfigured: SECRET_KEY is not set" in output
    assert "SECRET_KEY_FILE" in output  # says how to set it
    assert str(checkout / "var" / "secret_key") in output  # the copy's settings, not this checkout's


def test_manage_py_refuses_to_start_without_a_secret_key(clone):
    result = run([sys.executable, "manage.py", "check"], clone, production_env(clone))
    _refuses_naming_secret_key(result, clone)


def test_a_celery_worker_refuses_to_start_without_a_secret_key(clone):
    args = [str(BIN / "celery"), "-A", "mailservice", "worker", "--concurrency", "1", "--without-gossip",
            "--without-mingle"]  # fmt: skip
    _refuses_naming_secret_key(run(args, clone, production_env(clone)), clone)


def test_celery_beat_refuses_to_start_without_a_secret_key(clone, tmp_path):
    args = [str(BIN / "celery"), "-A", "mailservice", "beat", "--schedule", str(tmp_path / "schedule")]
    _refuses_naming_secret_key(run(args, clone, production_env(clone)), clone)


def test_gunicorn_refuses_to_start_without_a_secret_key(clone):
    args = [str(BIN / "gunicorn"), "mailservice.wsgi", "--bind", f"127.0.0.1:{free_port()}", "--workers", "1"]
    _refuses_naming_secret_key(run(args, clone, production_env(clone)), clone)


def test_a_secret_key_file_that_cannot_be_read_refuses_naming_it(clone, tmp_path):
    env = production_env(clone, SECRET_KEY_FILE=str(tmp_path / "missing"))
    result = run([sys.executable, "manage.py", "check"], clone, env)
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY_FILE names a file that cannot be read" in result.stderr


def test_debug_runs_without_a_secret_key(clone):
    result = run([sys.executable, "manage.py", "check"], clone, production_env(clone, DEBUG="1"))
    assert result.returncode == 0, result.stdout + result.stderr


class ThroughTlsProxy:
    """A browser on https://<host> reaching a real gunicorn through a proxy that terminates TLS, sets
    X-Forwarded-Proto and appends the client's address to X-Forwarded-For (as nginx's proxy_add_x_forwarded_for).
    Cookies are carried by hand: they are Secure, and this leg of the trip is plain HTTP."""

    def __init__(self, url: str, host: str) -> None:
        self.url = url
        self.host = host
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, *, client: str = "203.0.113.7", forwarded_for: str = "", **kwargs
    ) -> requests.Response:
        headers = {
            "Host": self.host,
            "X-Forwarded-Proto": "https",
            "X-Forwarded-For": f"{forwarded_for}, {client}" if forwarded_for else client,
            "Cookie": "; ".join(f"{name}={value}" for name, value in self.cookies.items()),
            **kwargs.pop("headers", {}),
        }
        response = requests.request(method, self.url + path, headers=headers, allow_redirects=False, timeout=30,
                                    **kwargs)  # fmt: skip
        self.cookies.update(response.cookies.get_dict())
        return response

    def log_in(self, username: str, password: str, **kwargs) -> requests.Response:
        page = self.request("GET", "/admin/login/", **kwargs)
        assert page.status_code == 200, page.status_code
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        origin = f"https://{self.host}"
        return self.request(
            "POST", "/admin/login/?next=/admin/",
            data={"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/admin/"},
            headers={"Origin": origin, "Referer": f"{origin}/admin/login/"},
            **kwargs,
        )  # fmt: skip


def staff_user(username: str, password: str) -> None:
    """A superuser whose password the web process (the real settings' PBKDF2, not the tests' MD5) can check."""
    hasher = PBKDF2PasswordHasher()
    user = User.objects.create_superuser(username)
    user.password = hasher.encode(password, hasher.salt())
    user.save(update_fields=["password"])


def collect_static(tmp_path_factory) -> str:
    """The web process serves the admin's pages with the real settings' manifest of static files."""
    root = tmp_path_factory.mktemp("static")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mailservice.settings", "STATIC_ROOT": str(root)}
    result = run([sys.executable, "manage.py", "collectstatic", "--no-input", "--verbosity", "0"], ROOT, env)
    assert result.returncode == 0, result.stderr
    return str(root)


@pytest.fixture(scope="module")
def static_root(tmp_path_factory) -> str:
    return collect_static(tmp_path_factory)


def web_behind_tls_proxy(services, static_root: str) -> str:
    return services.web(MAIL_BEHIND_TLS_PROXY="1", ALLOWED_HOSTS="mail.example.com,127.0.0.1", STATIC_ROOT=static_root)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_admin_login_through_an_https_proxy_is_not_a_403(services, static_root):
    staff_user("operator", "correct horse battery staple")
    url = web_behind_tls_proxy(services, static_root)
    browser = ThroughTlsProxy(url, "mail.example.com")

    response = browser.log_in("operator", "correct horse battery staple")

    assert response.status_code == 302, response.text[:500]
    assert response.headers["Location"] == "/admin/"
    assert "Secure" in response.headers["Set-Cookie"] and "sessionid" in browser.cookies
    assert browser.request("GET", "/admin/").status_code == 200
    hsts = browser.request("GET", "/health").headers["Strict-Transport-Security"]
    assert hsts == "max-age=31536000; includeSubDomains; preload"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_plain_http_is_redirected_to_https_except_health_and_metrics(services, static_root):
    url = web_behind_tls_proxy(services, static_root)
    host = {"Host": "mail.example.com"}

    login = requests.get(f"{url}/admin/login/", headers=host, allow_redirects=False, timeout=30)
    assert login.status_code == 301
    assert login.headers["Location"] == "https://mail.example.com/admin/login/"
    # Probes and scrapers that reach the process directly, without the proxy's header:
    assert requests.get(f"{url}/health", headers=host, allow_redirects=False, timeout=30).status_code == 200
    assert requests.get(f"{url}/health/ready", headers=host, allow_redirects=False, timeout=30).status_code == 200
    assert requests.get(f"{url}/metrics", headers=host, allow_redirects=False, timeout=30).status_code == 200
