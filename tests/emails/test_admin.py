"""The operator's admin: find emails, see why they failed, resend and retry."""

import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from emails import admin as admin_module
from emails.admin import CappedCountPaginator
from emails.models import ApiKey, Email, EmailEvent, Suppression, Template
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "pw"))
    return client


@pytest.fixture
def emails(alice) -> list[Email]:
    ids = [
        alice.post("/api/v1/emails", email_payload(to=[f"user{n}@example.org"]), format="json").json()["id"]
        for n in range(3)
    ]
    Email.objects.filter(id=ids[0]).update(status=Email.Status.FAILED, attempts=5, last_error="SMTP 550 unknown user")
    return [Email.objects.get(id=i) for i in ids]


def test_it_searches_by_recipient_and_by_id(operator, emails):
    by_recipient = operator.get("/admin/emails/email/", {"q": "User1@Example.org"})
    by_id = operator.get("/admin/emails/email/", {"q": str(emails[2].id)})

    assert [e.id for e in by_recipient.context["cl"].result_list] == [emails[1].id]
    assert [e.id for e in by_id.context["cl"].result_list] == [emails[2].id]


def test_it_filters_by_status_and_shows_the_error(operator, emails):
    response = operator.get("/admin/emails/email/", {"status__exact": "FAILED"})

    assert [e.id for e in response.context["cl"].result_list] == [emails[0].id]
    assert "SMTP 550 unknown user" in response.content.decode()


def test_it_shows_an_email_with_its_events(operator, emails):
    response = operator.get(f"/admin/emails/email/{emails[0].id}/change/")

    assert response.status_code == 200
    assert "SMTP 550 unknown user" in response.content.decode()


def test_resend_creates_a_new_email_with_the_same_content(operator, emails):
    original = emails[1]

    operator.post("/admin/emails/email/", {"action": "resend", "_selected_action": [original.id]})

    copy = Email.objects.get(resent_from=original)
    assert copy.id != original.id
    assert (copy.status, copy.to, copy.subject, copy.text) == ("PENDING", original.to, original.subject, original.text)


def test_resending_an_email_its_key_may_no_longer_send_is_refused_with_a_message_not_a_500(operator, emails):
    ApiKey.objects.filter(id=emails[1].api_key_id).update(senders=["other.example"])  # narrowed since

    response = operator.post(
        "/admin/emails/email/", {"action": "resend", "_selected_action": [emails[1].id]}, follow=True
    )

    assert response.status_code == 200
    assert f"Not resent, as its API key would refuse it now: {emails[1].id}." in response.content.decode()
    assert not Email.objects.filter(resent_from=emails[1]).exists()


def test_resending_an_email_of_a_revoked_key_is_refused(operator, emails):
    ApiKey.objects.filter(id=emails[1].api_key_id).update(revoked_at=timezone.now())

    response = operator.post(
        "/admin/emails/email/", {"action": "resend", "_selected_action": [emails[1].id]}, follow=True
    )

    assert f"Not resent, as its API key would refuse it now: {emails[1].id}." in response.content.decode()
    assert not Email.objects.filter(resent_from=emails[1]).exists()


def test_retry_now_gives_a_failed_email_new_attempts(operator, emails):
    failed = emails[0]

    operator.post("/admin/emails/email/", {"action": "retry_now", "_selected_action": [failed.id, emails[1].id]})

    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.last_error) == ("PENDING", 0, "")
    assert Email.objects.get(id=emails[1].id).status == "PENDING"  # was not FAILED: untouched


def test_cancel_fails_pending_emails_and_says_which_were_not(operator, emails):
    pending, failed = emails[1], emails[0]

    response = operator.post(
        "/admin/emails/email/", {"action": "cancel", "_selected_action": [pending.id, failed.id]}, follow=True
    )

    pending.refresh_from_db()
    assert (pending.status, pending.last_error) == ("FAILED", "cancelled")
    assert Email.objects.get(id=failed.id).last_error == "SMTP 550 unknown user"  # was not PENDING: untouched
    assert "Cancelled 1 email(s); 1 not PENDING, left as they were." in response.content.decode()


def test_the_email_page_shows_its_attempts_and_events_as_a_timeline_in_order(operator, emails):
    email = emails[0]
    start = email.created_at
    for seconds, kind, detail in [(9, "bounced", "mailbox full"), (2, "retry", "SMTP 451"), (5, "sent", "<id@x>")]:
        EmailEvent.objects.create(email=email, type=kind, provider="relay", detail=detail,
                                  at=start + timedelta(seconds=seconds))  # fmt: skip

    page = operator.get(f"/admin/emails/email/{email.id}/change/").content.decode()

    timeline = page[page.index('<ol class="timeline">') :]
    positions = [timeline.index(f"<b>{kind}</b>") for kind in ("accepted", "retry", "sent", "bounced")]
    assert positions == sorted(positions)
    assert "via relay" in timeline and "SMTP 451" in timeline


def test_the_html_body_is_previewed_in_a_sandboxed_iframe_escaped(operator, alice):
    html = '<p onclick="x()">Hi</p>"><script>alert(1)</script>'
    email_id = alice.post("/api/v1/emails", email_payload(html=html), format="json").json()["id"]

    page = operator.get(f"/admin/emails/email/{email_id}/change/").content.decode()

    iframe = page[page.index('<iframe class="html-preview"') :].split("</iframe>")[0]
    assert 'sandbox=""' in iframe and 'referrerpolicy="no-referrer"' in iframe
    # Escaped into srcdoc, behind a policy that loads nothing remote (no tracking pixel fires).
    csp = "&lt;meta http-equiv=&quot;Content-Security-Policy&quot; content=&quot;default-src &#x27;none&#x27;"
    assert csp in iframe
    assert "&lt;p onclick=&quot;x()&quot;&gt;Hi&lt;/p&gt;&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in iframe
    assert "<script>alert(1)" not in page


def test_the_changelist_counts_no_further_than_its_cap(operator, emails, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "CAP", 2)

    with CaptureQueriesContext(connection) as queries:
        page = operator.get("/admin/emails/email/").content.decode()

    assert "more than 2 emails" in page
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 3" in sql for sql in counts)  # never a COUNT(*) of the whole table
    assert len(operator.get("/admin/emails/email/").context["cl"].result_list) == 3  # the page itself is whole


def test_the_provider_filter_offers_the_configured_providers(operator, emails, settings):
    settings.MAIL_PROVIDERS = [{"name": "relay", "backend": "locmem"}, {"name": "backup", "backend": "locmem"}]
    Email.objects.filter(id=emails[2].id).update(provider="backup")

    response = operator.get("/admin/emails/email/", {"provider": "backup"})

    assert [e.id for e in response.context["cl"].result_list] == [emails[2].id]
    assert "?provider=relay" in response.content.decode()


def test_a_view_only_staff_user_gets_no_actions(client, emails):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_email"))
    client.force_login(viewer)

    page = client.get("/admin/emails/email/")
    response = client.post("/admin/emails/email/", {"action": "cancel", "_selected_action": [str(emails[1].id)]})

    assert page.status_code == 200 and "Cancel pending emails" not in page.content.decode()
    assert response.status_code in (200, 302)
    assert Email.objects.get(id=emails[1].id).status == Email.Status.PENDING


def test_an_action_over_too_many_emails_is_refused(operator, emails, monkeypatch):
    monkeypatch.setattr(admin_module, "ACTION_LIMIT", 2)

    response = operator.post(
        "/admin/emails/email/", {"action": "cancel", "select_across": "1", "index": "0",
                                 "_selected_action": [str(e.id) for e in emails]}, follow=True,
    )  # fmt: skip

    assert "Select at most 2 emails" in response.content.decode()
    assert not Email.objects.filter(last_error="cancelled").exists()


def test_only_the_time_column_sorts(operator, emails):
    response = operator.get("/admin/emails/email/", {"o": "3"})  # a click on "subject"

    assert response.context["cl"].get_ordering(response.wsgi_request, Email.objects.all())[0] == "-created_at"


def test_a_template_that_does_not_compile_is_refused_when_saved(operator):
    response = operator.post("/admin/emails/template/add/", {"name": "broken", "subject": "Hi {% if %}", "text": "x"})

    assert response.status_code == 200
    assert "Does not compile" in response.content.decode()
    assert not Template.objects.exists()


def test_templates_and_suppressions_are_managed_in_the_admin(operator):
    response = operator.post(
        "/admin/emails/template/add/",
        {"name": "welcome", "subject": "Welcome {{ name }}", "text": "Hi", "html": "<b>Hi</b>"},
    )
    assert response.status_code == 302
    assert Template.objects.get(name="welcome").subject == "Welcome {{ name }}"
    assert "srcdoc=" in operator.get(f"/admin/emails/template/{Template.objects.get().id}/change/").content.decode()

    operator.post("/admin/emails/suppression/add/", {"address": " Bob@Example.org ", "reason": "manual"})
    assert Suppression.objects.get().address == "bob@example.org"
    assert "bob@example.org" in operator.get("/admin/emails/suppression/").content.decode()


def _staff_who_may(client, *codenames: str):
    user = User.objects.create_user("keeper", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="emails", codename__in=codenames))
    client.force_login(user)
    return client


def _revoke(client, api_key: ApiKey):
    """The changelist's action form, as the browser posts it."""
    return client.post("/admin/emails/apikey/", {"action": "revoke", "index": "0",
                                                 "_selected_action": [str(api_key.id)]}, follow=True)  # fmt: skip


def test_a_user_who_may_only_view_api_keys_neither_sees_nor_posts_the_revoke_action(client, alice):
    viewer = _staff_who_may(client, "view_apikey")

    page = viewer.get("/admin/emails/apikey/")
    response = _revoke(viewer, alice.api_key)

    assert page.status_code == 200 and "Revoke the selected keys" not in page.content.decode()
    assert response.status_code == 200 and "Revoked 1 key" not in response.content.decode()
    assert ApiKey.objects.get(id=alice.api_key.id).revoked_at is None
    assert alice.get("/api/v1/emails").status_code == 200  # the key still works


def test_a_user_who_may_change_api_keys_revokes_one(client, alice):
    keeper = _staff_who_may(client, "view_apikey", "change_apikey")

    assert "Revoke the selected keys" in keeper.get("/admin/emails/apikey/").content.decode()
    response = _revoke(keeper, alice.api_key)

    assert "Revoked 1 key(s)." in response.content.decode()
    assert ApiKey.objects.get(id=alice.api_key.id).revoked_at is not None
    assert alice.get("/api/v1/emails").status_code == 401


def test_a_template_with_neither_text_nor_html_is_refused_when_saved(operator):
    response = operator.post("/admin/emails/template/add/", {"name": "empty", "subject": "Hi", "text": " ", "html": ""})

    assert response.status_code == 200
    assert "a template with neither renders no body" in response.content.decode()
    assert not Template.objects.exists()


def test_the_template_form_says_names_are_slugs(operator):
    page = operator.get("/admin/emails/template/add/").content.decode()
    response = operator.post("/admin/emails/template/add/", {"name": "Order shipped", "subject": "Hi", "text": "x"})

    assert "a slug, made of letters, digits, hyphens and underscores" in page
    assert response.status_code == 200 and "slug" in str(response.context["adminform"].form.errors["name"])
    assert not Template.objects.exists()


def _add_api_key(client, **fields):
    return client.post("/admin/emails/apikey/add/", {"name": "billing", "senders": "", **fields})


def test_an_operator_makes_an_api_key_in_the_admin_and_sees_it_once(operator):
    response = _add_api_key(operator, senders="shop.example.com\nops@example.org")

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    [key] = re.findall(r'value="(ms_[^"]+)"', response.content.decode())
    stored = ApiKey.objects.get(name="billing")
    assert (stored.key_hash, stored.prefix) == (ApiKey.hash(key), key[:10])
    assert stored.senders == ["shop.example.com", "ops@example.org"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/emails").status_code == 200
    # Nowhere else: not on the key's page, nor in a message kept for the next page, nor in the admin's log.
    assert key not in operator.get(f"/admin/emails/apikey/{stored.id}/change/").content.decode()
    assert key not in operator.get("/admin/emails/apikey/").content.decode()
    assert not any(key in str(value) for entry in LogEntry.objects.values() for value in entry.values())


def test_a_key_made_in_the_admin_checks_its_senders(operator):
    response = _add_api_key(operator, senders="not a domain")

    assert response.status_code == 200
    assert "is not a domain such as example.com" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_a_user_who_may_not_add_api_keys_cannot_make_one(client):
    keeper = _staff_who_may(client, "view_apikey", "change_apikey")

    assert "/admin/emails/apikey/add/" not in keeper.get("/admin/emails/apikey/").content.decode()
    assert _add_api_key(keeper).status_code == 403
    assert not ApiKey.objects.exists()


def test_a_user_who_may_add_api_keys_makes_one(client):
    keeper = _staff_who_may(client, "view_apikey", "add_apikey")

    response = _add_api_key(keeper)

    assert response.status_code == 200
    assert ApiKey.objects.filter(name="billing").exists()


def test_an_api_key_field_offers_no_popup_to_make_a_key_in(operator):
    for page in ("/admin/emails/template/add/", "/admin/emails/suppression/add/"):
        html = operator.get(page).content.decode()
        assert 'id="id_api_key"' in html
        assert 'id="add_id_api_key"' not in html, page
