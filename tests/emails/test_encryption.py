"""Encryption at rest (MAIL_ENCRYPTION_KEYS): with keys set, an email's content is in no copy the database keeps
(a pg_dump of it shows none), while the API, the admin, the SMTP sink and the webhook receiver see it in clear;
rotation to a new key lets the old one go; without keys content is stored in clear and reads as written; a value
no key opens is an error naming the variable, never ciphertext shown as content."""

import base64
import glob
import json
import subprocess
import uuid

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from emails.models import Email, IdempotencyKey, Webhook, WebhookMessage
from emails.services import api_key_create, email_send, emails_send
from emails.services.accepting import OnceItem, email_create_batch_once
from emails.services.webhook_delivery import webhooks_deliver_due
from infra.encryption import UndecryptableError
from mailservice.settings import encryption_keys
from tests.conftest import email_payload, make_due

pytestmark = pytest.mark.django_db(transaction=True)  # committed: pg_dump and the raw reads see the rows

OLD_KEY, NEW_KEY, OTHER_KEY = (Fernet.generate_key().decode() for _ in range(3))


@pytest.fixture
def marker() -> str:
    return f"marker-{uuid.uuid4().hex}"


@pytest.fixture
def shop(db):
    api_key, key = api_key_create(name="shop")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    client.api_key = api_key
    return client


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "pw"))
    return client


def marked_email(marker: str) -> dict:
    attached = base64.b64encode(f"attached {marker}".encode()).decode()
    return email_payload(
        subject=f"Subject {marker}",
        text=f"Text {marker}\n" + "Thank you for your order. " * 60,  # over a kilobyte: compressed, then sealed
        html=f"<p>Html {marker}</p>",
        headers={"X-Marker": marker},
        metadata={"order": marker},
        attachments=[{"filename": "note.txt", "content_type": "text/plain", "content": attached}],
    )


def pg_dump() -> str:
    newest = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), key=lambda path: int(path.split("/")[4]))[-1]
    db = connection.settings_dict
    dumped = subprocess.run(
        [newest, "--no-owner", "-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432), "-U", db["USER"],
         db["NAME"]],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return dumped.stdout


def stored(column: str, email_id: str):
    """A column of an email as the database holds it (what a backup holds); a JSON column's decoded."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column}::text, pg_typeof({column})::text FROM emails_email WHERE id = %s", [email_id])
        value, type_name = cursor.fetchone()
    return json.loads(value) if type_name == "jsonb" else value


def assert_shown_in_clear(shop, operator, email_id: str, marker: str) -> None:
    shown = shop.get(f"/api/v1/emails/{email_id}").json()
    sent = marked_email(marker)
    assert (shown["subject"], shown["text"], shown["html"]) == (sent["subject"], sent["text"], sent["html"])
    assert (shown["headers"], shown["metadata"]) == ({"X-Marker": marker}, {"order": marker})
    assert shown["attachments"][0]["size"] == len(f"attached {marker}")  # the API shows no attachment's content
    assert Email.objects.get(id=email_id).attachments[0]["content"] == marked_email(marker)["attachments"][0]["content"]
    page = operator.get(f"/admin/emails/email/{email_id}/change/").content.decode()
    assert f"Subject {marker}" in page and f"Text {marker}" in page and "enc:f:" not in page
    message = WebhookMessage.objects.filter(email_id=email_id).first()
    page = operator.get(f"/admin/emails/webhookmessage/{message.id}/change/").content.decode()
    assert marker in page and "enc:f:" not in page


def test_with_keys_set_no_copy_of_the_content_is_in_a_pg_dump_and_every_reader_sees_it_in_clear(
    settings, sending_to_sink, receiver, shop, operator, marker
):
    settings.MAIL_ENCRYPTION_KEYS = [OLD_KEY]
    hook = Webhook.objects.create(api_key=shop.api_key, url=receiver.url)
    receiver.secret = hook.secret
    body = marked_email(marker)
    accepted = shop.post("/api/v1/emails", body, format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    assert accepted.status_code == 202, accepted.content
    email_id = accepted.json()["id"]
    make_due(email_id)
    email_send(email_id)
    assert webhooks_deliver_due() == {"delivered": 1}

    (received,) = sending_to_sink.received
    assert received.message["Subject"] == f"Subject {marker}" and received.message["X-Marker"] == marker
    parts = [part.get_payload(decode=True).decode() for part in received.message.walk() if not part.is_multipart()]
    for shown in (f"Text {marker}", f"<p>Html {marker}</p>", f"attached {marker}"):
        assert any(shown in part for part in parts), parts
    (delivered,) = receiver.requests
    assert delivered.event["data"]["metadata"] == {"order": marker}  # verified with the secret, so it was opened
    replay = shop.post("/api/v1/emails", body, format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    assert replay.json() == accepted.json()

    dump = pg_dump()
    # The subject, bodies and headers sealed together, the bodies compressed first; metadata and attachments apart.
    assert (stored("subject", email_id), stored("text", email_id), stored("headers", email_id)) == ("", "", {})
    assert stored("content", email_id).startswith("enc:z:")
    assert stored("metadata", email_id).startswith("enc:f:") and stored("attachments", email_id).startswith("enc:f:")
    assert IdempotencyKey.objects.count() == 1 and WebhookMessage.objects.count() == 1
    for secret in (marker, body["attachments"][0]["content"], hook.secret):
        assert secret not in dump
    assert_shown_in_clear(shop, operator, email_id, marker)


def test_rotation_to_a_new_key_lets_the_old_one_go_and_seals_rows_stored_in_clear(
    settings, sending_to_sink, receiver, shop, operator, marker, capsys
):
    settings.MAIL_ENCRYPTION_KEYS = []
    hook = Webhook.objects.create(api_key=shop.api_key, url=receiver.url)  # its secret stored in clear
    receiver.secret = hook.secret
    clear = shop.post("/api/v1/emails", marked_email(marker), format="json", HTTP_IDEMPOTENCY_KEY="k-clear")
    clear_id = clear.json()["id"]
    assert stored("subject", clear_id) == f"Subject {marker}"
    settings.MAIL_ENCRYPTION_KEYS = [OLD_KEY]
    sealed_id = shop.post("/api/v1/emails", marked_email(marker), format="json", HTTP_IDEMPOTENCY_KEY="k-old").json()[
        "id"
    ]
    for email_id in (clear_id, sealed_id):
        make_due(email_id)
        email_send(email_id)
    sealed_with_old = stored("content", sealed_id)
    # A door's idempotency key (the stream's, the Postmark door's): its stored {"id"} is resealed too.
    fields = {"from_email": "shop@example.com", "to": ["alice@example.org"], "subject": marker}
    once = OnceItem(api_key=shop.api_key, key="stream:order-7", request_hash="h7", fields=fields)
    [first] = email_create_batch_once([once])

    settings.MAIL_ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    call_command("rotate_encryption_key", "--batch", "1")
    assert "Every stored value is sealed with the newest key" in capsys.readouterr().out
    settings.MAIL_ENCRYPTION_KEYS = [NEW_KEY]

    assert stored("content", sealed_id) != sealed_with_old
    # A row stored in clear is laid out as saving it now stores it: subject, bodies and headers together.
    assert (stored("subject", clear_id), stored("text", clear_id)) == ("", "")
    assert stored("content", clear_id).startswith("enc:z:")
    assert marker not in pg_dump() and hook.secret not in pg_dump()
    for email_id in (clear_id, sealed_id):
        assert_shown_in_clear(shop, operator, email_id, marker)
    replay = shop.post("/api/v1/emails", marked_email(marker), format="json", HTTP_IDEMPOTENCY_KEY="k-clear")
    assert replay.json() == clear.json()
    assert email_create_batch_once([once]) == [{"email_id": first["email_id"], "replayed": True}]
    assert webhooks_deliver_due() == {"delivered": 2}  # the secret and the payloads open with the new key alone
    assert [request.event["data"]["metadata"] for request in receiver.requests] == [{"order": marker}] * 2

    # Run again, it only reads: every value is sealed with the newest key already.
    settings.MAIL_ENCRYPTION_KEYS = [NEW_KEY]
    call_command("rotate_encryption_key")
    assert " 0 re-encrypted" in capsys.readouterr().out.splitlines()[0]


def test_a_value_no_key_opens_is_an_error_naming_the_variable_never_ciphertext(settings, shop, operator, marker):
    settings.MAIL_ENCRYPTION_KEYS = [OLD_KEY]
    email_id = shop.post("/api/v1/emails", marked_email(marker), format="json").json()["id"]

    settings.MAIL_ENCRYPTION_KEYS = [OTHER_KEY]
    answer = shop.get(f"/api/v1/emails/{email_id}")
    assert answer.status_code == 500
    assert "MAIL_ENCRYPTION_KEYS" in answer.json()["detail"] and "enc:" not in answer.content.decode()
    with pytest.raises(UndecryptableError, match="MAIL_ENCRYPTION_KEYS"):
        operator.get(f"/admin/emails/email/{email_id}/change/")

    settings.MAIL_ENCRYPTION_KEYS = []
    answer = shop.get(f"/api/v1/emails/{email_id}")
    assert answer.status_code == 500 and "MAIL_ENCRYPTION_KEYS is not set" in answer.json()["detail"]
    with pytest.raises(CommandError, match="MAIL_ENCRYPTION_KEYS is not set"):
        call_command("rotate_encryption_key")


def test_without_keys_content_is_stored_in_clear_and_reads_as_written_even_when_it_looks_sealed(settings, shop):
    settings.MAIL_ENCRYPTION_KEYS = []
    looks_sealed = "enc:f:gAAAAABnot-a-token"
    email_id = shop.post("/api/v1/emails", email_payload(subject=looks_sealed, text="enc:c:x", html=""),
                         format="json").json()["id"]  # fmt: skip
    assert stored("subject", email_id) == "enc:c:" + looks_sealed  # escaped: never taken for a token
    shown = shop.get(f"/api/v1/emails/{email_id}").json()
    assert (shown["subject"], shown["text"], shown["html"]) == (looks_sealed, "enc:c:x", "")
    email = Email.objects.get(id=email_id)
    assert (email.subject, email.text) == (looks_sealed, "enc:c:x")

    # Turned on later, the clear row stays readable, and an empty field stays empty.
    settings.MAIL_ENCRYPTION_KEYS = [OLD_KEY]
    assert shop.get(f"/api/v1/emails/{email_id}").json()["subject"] == looks_sealed
    assert stored("html", email_id) == "" and stored("headers", email_id) == {}


def test_a_key_that_is_not_a_fernet_key_is_refused_at_start_naming_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("MAIL_ENCRYPTION_KEYS", f"{NEW_KEY}, not-a-key")
    with pytest.raises(ImproperlyConfigured, match="MAIL_ENCRYPTION_KEYS: key 2 is not a Fernet key"):
        encryption_keys(tmp_path / "encryption_keys")
    monkeypatch.setenv("MAIL_ENCRYPTION_KEYS", f" {NEW_KEY} ,{OLD_KEY}")
    assert encryption_keys(tmp_path / "encryption_keys") == [NEW_KEY, OLD_KEY]
    monkeypatch.delenv("MAIL_ENCRYPTION_KEYS")
    (tmp_path / "encryption_keys").write_text(OTHER_KEY + "\n")
    assert encryption_keys(tmp_path / "encryption_keys") == [OTHER_KEY]  # the key make run keeps in var/


def test_content_sealed_together_reads_back_however_the_row_is_loaded(settings, shop, marker):
    settings.MAIL_ENCRYPTION_KEYS = [OLD_KEY]
    sent = marked_email(marker)
    email_id = shop.post("/api/v1/emails", sent, format="json").json()["id"]

    assert Email.objects.only("id").get(id=email_id).subject == sent["subject"]  # deferred, then loaded
    listed = Email.objects.defer("text", "html", "attachments", "headers").get(id=email_id)
    assert (listed.subject, listed.headers) == (sent["subject"], sent["headers"])
    (summary,) = shop.get("/api/v1/emails").json()["results"]
    assert summary["subject"] == sent["subject"]
    whole = Email.objects.get(id=email_id)
    assert (whole.text, whole.html, whole.metadata) == (sent["text"], sent["html"], sent["metadata"])


def test_the_orm_saves_an_email_as_the_doors_do_and_a_partial_save_keeps_the_rest(settings, marker):
    settings.MAIL_ENCRYPTION_KEYS = [OLD_KEY]
    (made,) = Email.objects.bulk_create([Email(from_email="a@example.com", to=["b@example.org"], subject=marker,
                                               text=f"Text {marker}", headers={"X-Marker": marker})])  # fmt: skip
    assert (stored("subject", made.id), stored("headers", made.id)) == ("", {})
    assert stored("content", made.id).startswith("enc:f:")

    email = Email.objects.get(id=made.id)
    email.subject = f"Changed {marker}"
    email.save(update_fields=["subject"])
    again = Email.objects.get(id=made.id)
    assert (again.subject, again.text, again.headers) == (f"Changed {marker}", f"Text {marker}", {"X-Marker": marker})
    assert marker not in pg_dump()


def test_a_webhook_whose_secret_no_key_opens_fails_alone(settings, shop, receiver):
    settings.MAIL_ENCRYPTION_KEYS = [OTHER_KEY]
    lost = Webhook.objects.create(api_key=shop.api_key, url=receiver.url + "?lost")
    settings.MAIL_ENCRYPTION_KEYS = [OLD_KEY]
    kept = Webhook.objects.create(api_key=shop.api_key, url=receiver.url)
    receiver.secret = kept.secret
    email_id = shop.post("/api/v1/emails", email_payload(), format="json").json()["id"]
    make_due(email_id)
    email_send(email_id)

    assert webhooks_deliver_due() == {"delivered": 1, "retry": 1}
    assert [request.path for request in receiver.requests] == ["/hooks"]
    failed = WebhookMessage.objects.get(webhook=lost)
    assert (failed.status, failed.attempts) == ("pending", 1)
    assert "cannot be decrypted" in failed.attempts_made.get().error


def test_partial_loads_and_saves_neither_lose_content_nor_unsaved_edits(settings, shop, marker):
    settings.MAIL_ENCRYPTION_KEYS = [OLD_KEY]
    sent = marked_email(marker)
    email_id = shop.post("/api/v1/emails", sent, format="json").json()["id"]

    # Loaded without `content`: the subject is not taken from its empty column.
    assert Email.objects.only("id", "subject").get(id=email_id).subject == sent["subject"]
    # An instance with deferred fields saved whole: Django saves the loaded ones, and they go together.
    partial = Email.objects.only("id", "subject", "status").get(id=email_id)
    partial.subject = f"Changed {marker}"
    partial.save()
    # A deferred field read after an unsaved edit of another: the edit stays.
    listed = Email.objects.defer("text", "html", "headers", "content").get(id=email_id)
    listed.html = "<p>edited</p>"
    assert listed.text == sent["text"] and listed.html == "<p>edited</p>"
    listed.save(update_fields=["html"])

    again = Email.objects.get(id=email_id)
    assert (again.subject, again.text, again.html, again.headers) == (
        f"Changed {marker}", sent["text"], "<p>edited</p>", sent["headers"],
    )  # fmt: skip


def test_an_email_no_key_opens_waits_for_its_key_and_its_batch_mates_are_sent(settings, shop, sending_to_sink):
    settings.MAIL_ENCRYPTION_KEYS = [OTHER_KEY]
    waiting = shop.post("/api/v1/emails", email_payload(subject="Sealed with another key"), format="json").json()["id"]
    settings.MAIL_ENCRYPTION_KEYS = [OLD_KEY]
    mate = shop.post("/api/v1/emails", email_payload(), format="json").json()["id"]
    for email_id in (waiting, mate):
        make_due(email_id)

    emails_send([waiting, mate])  # one claim, as a worker's batch

    assert [received.email_id for received in sending_to_sink.received] == [mate]
    held = Email.objects.only("status", "attempts", "next_attempt_at").get(id=waiting)
    assert (held.status, held.attempts) == ("PENDING", 0)  # not failed for a setting, its attempt not counted
    assert held.next_attempt_at > timezone.now()
    settings.MAIL_ENCRYPTION_KEYS = [OLD_KEY, OTHER_KEY]  # the key is back
    make_due(waiting)
    emails_send([waiting])
    assert Email.objects.get(id=waiting).status == "SENT" and len(sending_to_sink.received) == 2
