"""The dashboard in a real browser (Debian's headless Chromium), against gunicorn serving the static files
through whitenoise as in production, a real Celery worker and the SMTP sink."""

from __future__ import annotations

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User

from emails.models import ApiKey, Email, Template
from emails.services import api_key_create
from tests.conftest import make_emails
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def _open_dashboard(browser, url: str, errors: list[str]):
    """A page logged in through the admin's login form, on the dashboard; console errors go to `errors`."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.on("console", lambda m: errors.append(f"{m.text} ({m.location})") if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{url}/dashboard/")
    assert "/admin/login/" in page.url  # not logged in yet
    page.fill("#id_username", "operator")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_url(f"{url}/dashboard/")
    return page


@pytest.fixture
def staff(transactional_db) -> User:
    # Hashed as gunicorn's settings check it (the tests' own settings use MD5 only, for speed).
    password = PBKDF2PasswordHasher().encode("pw", PBKDF2PasswordHasher().salt())
    return User.objects.create(username="operator", password=password, is_staff=True, is_superuser=True)


def test_an_operator_sends_from_the_form_and_its_card_reaches_sent(
    sending_to_sink, services, static_root, browser, staff, artifacts
):
    Template.objects.create(
        name="welcome", subject="Welcome, {{ name }}", text="Hello {{ name }}.", html="<h1>Hello {{ name }}</h1>"
    )
    shop_key = api_key_create(name="shop")[0]
    ApiKey.objects.filter(id=shop_key.id).update(senders=["example.com"])  # the From below is allowed
    services.worker()
    url = services.web(STATIC_ROOT=str(static_root))
    errors: list[str] = []
    page = _open_dashboard(browser, url, errors)

    page.fill("[name=from]", "Shop <shop@example.com>")
    page.fill("[name=to]", "alice@example.org")
    page.select_option("[name=template]", "welcome")
    page.fill("[name=context]", '{"name": "Alice"}')
    page.click("#send-form button[type=submit]")
    page.locator("#send-errors", has_text="api_key: Pick the API key to send as").wait_for()  # none picked yet
    assert len(errors) == 1 and "400 (Bad Request)" in errors[0]  # Chromium logs that expected 400
    errors.clear()
    page.select_option("[name=api_key]", str(shop_key.id))  # waits for dashboard.js to load the keys
    assert page.inner_text(f"[name=api_key] option[value='{shop_key.id}']") == f"shop ({shop_key.prefix}…): example.com"
    page.click("#send-form button[type=submit]")

    card = page.locator(".followed").first
    card.locator(".status[data-status=SENT]").wait_for(timeout=60_000)
    email_id = card.get_attribute("data-email-id")
    email = Email.objects.get(id=email_id)
    assert (email.status, email.subject, email.api_key_id) == ("SENT", "Welcome, Alice", shop_key.id)
    [received] = wait_for(lambda: sending_to_sink.received, timeout=10, what="the sink to hold the message")
    assert received.email_id == email_id
    assert received.rcpt_tos == ["alice@example.org"]
    assert card.locator("[data-step].done").all_inner_texts() == ["PENDING", "PROCESSING", "SENT"]
    page.locator("[data-count=SENT]", has_text="1").wait_for(timeout=20_000)  # the next refresh counts it
    page.screenshot(path=artifacts / "dashboard-sent.png", full_page=True)

    page.click(f".followed a.email-id >> text={email_id}")
    page.wait_for_url(f"**/admin/emails/email/{email_id}/change/")
    assert page.locator(".timeline li b").all_inner_texts() == ["accepted", "sent"]
    preview = page.locator("iframe.html-preview")
    assert preview.get_attribute("sandbox") == ""
    assert preview.content_frame.locator("h1").inner_text() == "Hello Alice"
    page.screenshot(path=artifacts / "admin-email.png", full_page=True)
    assert errors == []


def test_the_dashboard_shows_counts_and_chart_and_refreshes_itself(services, static_root, browser, staff, artifacts):
    make_emails(3)
    failed = make_emails(2)
    Email.objects.filter(id__in=failed).update(status=Email.Status.FAILED, last_error="SMTP 550 unknown user")
    url = services.web(STATIC_ROOT=str(static_root))
    errors: list[str] = []
    page = _open_dashboard(browser, url, errors)

    assert page.inner_text("[data-count=PENDING]") == "3"
    assert page.inner_text("[data-count=FAILED]") == "2"
    assert page.locator("#failures tbody tr").count() == 2
    assert "SMTP 550 unknown user" in page.inner_text("#failures")
    totals = "Chart.getChart('chart').data.datasets.map(d => [d.label, d.data.reduce((a, b) => a + b, 0)])"
    assert page.evaluate(totals) == [["accepted", 5], ["sent", 0], ["failed", 2]]
    page.evaluate("window.notReloaded = true")

    # A new email shows up by itself: the page refreshes its figures, not itself.
    make_emails(1)
    page.locator("[data-count=PENDING]", has_text="4").wait_for(timeout=20_000)
    assert page.evaluate("window.notReloaded") is True
    assert page.evaluate(totals)[0] == ["accepted", 6]
    page.screenshot(path=artifacts / "dashboard.png", full_page=True)
    assert errors == []
