"""The SMTP submission door: a real `manage.py smtpd` process, real clients (smtplib, Django's SMTP backend), a
real worker delivering to an SMTP sink, and the reply codes of the contract."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.core.mail import EmailMessage as DjangoEmailMessage
from django.core.mail import get_connection
from django.db import connection
from django.utils import timezone

from emails.models import ApiKey, Email
from emails.services import api_key_create
from tests.processes import ROOT, Process, wait_for
from tests.sink import free_port

pytestmark = pytest.mark.django_db(transaction=True)

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(500)
PDF = b"%PDF-1.4\n" + os.urandom(2000)
ACCEPTED = re.compile(r"Accepted as email ([0-9a-f-]{36})")


def _start_smtpd(services, *args: str, **env: str) -> int:
    """A `manage.py smtpd` process (`args` given to it) on a free loopback port (unless env says where),
    answering; its port."""
    port = free_port()
    env = {"MAIL_SMTP_LISTEN": f"127.0.0.1:{port}", **env}
    process = Process("smtpd", [sys.executable, "manage.py", "smtpd", *args], {**services.env, **env}, services.log_dir)
    services.processes.append(process)

    def answers() -> bool:
        assert not process.exited(), process.log()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_for(answers, timeout=30, what="smtpd to listen")
    return port


def _client(port: int, key: str | None = None) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo()
    if key is not None:
        client.login("anyone", key)
    return client


def _submit(client: smtplib.SMTP, message: bytes, sender: str, recipients: list[str]) -> tuple[int, str]:
    """(code, text) of the reply to the message (MAIL FROM and RCPT TO accepted)."""
    assert client.mail(sender)[0] == 250
    for recipient in recipients:
        assert client.rcpt(recipient)[0] == 250
    code, text = client.data(message)
    return code, text.decode()


def _message(**headers: str) -> bytes:
    message = EmailMessage()
    fields = {"From": "Shop <shop@example.com>", "To": "alice@example.org", "Subject": "Your order", **headers}
    for name, value in fields.items():
        message[name.replace("_", "-")] = value
    message.set_content("Thank you for your order.")
    return message.as_bytes(policy=SMTP_POLICY)


def _key(**kwargs) -> str:
    return api_key_create(name="smtp", **kwargs)[1]


def _sent(email_ids: list[str]) -> bool:
    return Email.objects.filter(id__in=email_ids, status=Email.Status.SENT).count() == len(email_ids)


def test_a_multipart_message_arrives_whole_with_its_bcc_in_the_envelope_only(services, sending_to_sink):
    key = _key()
    port = _start_smtpd(services)
    smtpd = services.processes[-1]
    services.worker()
    message = EmailMessage()
    message["From"] = "Shop <shop@example.com>"
    message["To"] = "Alice <alice@example.org>"
    message["Cc"] = "carol@example.org"
    message["Subject"] = "Ihre Bestellung über 3 Artikel"
    message["X-Order"] = "42"
    message.set_content("Grüße! Your order is on its way.")
    message.add_alternative('<p>Grüße! <img src="cid:logo@shop"></p>', subtype="html")
    message.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@shop>")
    message.add_attachment(PDF, "application", "pdf", filename="invoice.pdf")

    with _client(port, key) as client:
        code, text = _submit(client, message.as_bytes(policy=SMTP_POLICY), "shop@example.com",
                             ["alice@example.org", "carol@example.org", "dave@example.org"])  # fmt: skip
    assert code == 250, text
    email_id = ACCEPTED.search(text).group(1)
    assert Email.objects.filter(id=email_id).exists()  # 250: the row is committed
    wait_for(lambda: _sent([email_id]), timeout=30, what="the email to be SENT")

    received = sending_to_sink.received[-1]
    assert sorted(received.rcpt_tos) == ["alice@example.org", "carol@example.org", "dave@example.org"]
    delivered = received.message
    assert "Bcc" not in delivered
    assert "dave@example.org" not in received.raw.decode(errors="replace")
    assert delivered["X-Order"] == "42"
    parts = {part.get_content_type(): part for part in delivered.walk() if not part.is_multipart()}
    assert parts["text/plain"].get_payload(decode=True).decode(parts["text/plain"].get_content_charset()).strip() == (
        "Grüße! Your order is on its way."
    )
    html = parts["text/html"].get_payload(decode=True).decode(parts["text/html"].get_content_charset())
    assert html.strip() == '<p>Grüße! <img src="cid:logo@shop"></p>'
    assert parts["image/png"].get_payload(decode=True) == PNG
    assert parts["image/png"]["Content-ID"].strip("<>") == "logo@shop"
    assert parts["application/pdf"].get_payload(decode=True) == PDF
    assert parts["application/pdf"].get_filename() == "invoice.pdf"
    log = smtpd.log()
    assert email_id in log  # ids are logged; addresses and subjects never
    assert "example.org" not in log and "example.com" not in log and "Bestellung" not in log


def test_djangos_smtp_backend_sends_20_messages_on_one_connection(services, sending_to_sink):
    key = _key()
    port = _start_smtpd(services)
    services.worker()
    connection = get_connection(
        "django.core.mail.backends.smtp.EmailBackend",
        host="127.0.0.1", port=port, username="app", password=key, use_tls=False, timeout=30, fail_silently=False,
    )  # fmt: skip
    messages = [
        DjangoEmailMessage(f"Order {n}", "Thank you.", "shop@example.com", [f"customer{n}@example.org"])
        for n in range(20)
    ]
    assert connection.send_messages(messages) == 20  # send_messages opens one connection for all of them

    emails = Email.objects.filter(api_key__key_hash=ApiKey.hash(key))
    ids = [str(email_id) for email_id in emails.values_list("id", flat=True)]
    assert len(ids) == 20
    wait_for(lambda: _sent(ids), timeout=60, what="20 emails to be SENT")
    delivered = sorted(received.rcpt_tos[0] for received in sending_to_sink.received)
    assert delivered == sorted(f"customer{n}@example.org" for n in range(20))


def test_mail_from_without_auth_is_530_and_a_bad_or_revoked_key_535(services):
    api_key, key = api_key_create(name="revoked")
    api_key.revoked_at = timezone.now()
    api_key.save()
    port = _start_smtpd(services)
    with _client(port) as client:
        assert client.mail("shop@example.com")[0] == 530
        for password in ("ms_not-a-key", key):
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.login("anyone", password)
            assert refused.value.smtp_code == 535
    assert Email.objects.count() == 0


def test_a_51st_recipient_is_452(services):
    port = _start_smtpd(services)
    with _client(port, _key()) as client:
        assert client.mail("shop@example.com")[0] == 250
        for n in range(settings.MAIL_MAX_RECIPIENTS):
            assert client.rcpt(f"r{n}@example.org")[0] == 250
        assert client.rcpt("one-too-many@example.org")[0] == 452


def test_a_message_over_the_size_limit_is_552(services):
    port = _start_smtpd(services)
    with _client(port, _key()) as client:
        assert client.esmtp_features["size"] == str(settings.MAIL_MAX_EMAIL_BYTES)
        # Declared (as smtplib does): refused at MAIL FROM.
        assert client.mail("shop@example.com", [f"SIZE={settings.MAIL_MAX_EMAIL_BYTES + 1}"])[0] == 552
        client.rset()
        # Undeclared: refused once sent.
        line = b"x" * 76 + b"\r\n"
        big = _message() + line * (settings.MAIL_MAX_EMAIL_BYTES // len(line) + 1)
        code, _ = _submit(client, big, "shop@example.com", ["alice@example.org"])
        assert code == 552
    assert Email.objects.count() == 0


def test_an_unparsable_message_is_554(services):
    port = _start_smtpd(services)
    with _client(port, _key()) as client:
        code, text = _submit(client, b"Subject: no sender\r\n\r\nHello\r\n", "shop@example.com", ["a@example.org"])
    assert code == 554
    assert "From" in text
    assert Email.objects.count() == 0


def test_a_refused_field_is_550_naming_it(services):
    port = _start_smtpd(services)
    with _client(port, _key(senders=["example.com"])) as client:
        code, text = _submit(client, _message(From="ops@elsewhere.org"), "ops@elsewhere.org", ["a@example.org"])
        assert (code, text[:5]) == (550, "5.7.1")
        assert "from" in text
        code, text = _submit(client, _message(X_SMTPAPI="{}"), "shop@example.com", ["a@example.org"])
        assert (code, text[:5]) == (550, "5.6.0")
        assert "headers" in text
        code, text = _submit(client, _message(), "shop@example.com", ["a@example.org"])  # the session goes on
        assert code == 250, text
    assert Email.objects.count() == 1


def test_the_null_sender_is_taken_from_a_key_limited_to_senders_and_its_from_still_checked(services):
    # As found: MAIL FROM:<> reached the check as "<>", which no sender list holds: a 550 for a bounce-style sender.
    port = _start_smtpd(services)
    with _client(port, _key(senders=["example.com"])) as client:
        code, text = _submit(client, _message(), "", ["a@example.org"])  # smtplib writes MAIL FROM:<>
        assert code == 250, text
        code, text = _submit(client, _message(From="ops@elsewhere.org"), "", ["a@example.org"])
        assert (code, text[:5]) == (550, "5.7.1") and "from" in text
    assert Email.objects.count() == 1


def _create_key(database_url: str) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mailservice.settings", "DATABASE_URL": database_url}
    result = subprocess.run([sys.executable, "manage.py", "create_api_key", "smtp"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return result.stdout.strip().splitlines()[-1]


def test_a_message_while_the_database_is_stopped_is_451_and_taken_once_it_is_back(services, own_postgres):
    key = _create_key(own_postgres.url)
    port = _start_smtpd(services, DATABASE_URL=own_postgres.url)
    with _client(port, key) as client:
        own_postgres.stop()
        code, _ = _submit(client, _message(), "shop@example.com", ["alice@example.org"])
        assert code == 451
        own_postgres.start()
        code, text = _submit(client, _message(), "shop@example.com", ["alice@example.org"])
    assert code == 250, text
    email_id = ACCEPTED.search(text).group(1)
    assert own_postgres.query("SELECT id::text FROM emails_email") == [(email_id,)]


def _self_signed(tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def test_with_a_certificate_auth_is_refused_before_starttls_and_works_after(services, tmp_path):
    cert, cert_key = _self_signed(tmp_path)
    key = _key()
    port = _start_smtpd(services, MAIL_SMTP_TLS_CERT=cert, MAIL_SMTP_TLS_KEY=cert_key)
    plain = base64.b64encode(f"\0anyone\0{key}".encode()).decode()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        assert "starttls" in client.esmtp_features
        assert "auth" not in client.esmtp_features
        code, _ = client.docmd("AUTH", f"PLAIN {plain}")
        assert code in (530, 538)  # STARTTLS first
        assert client.mail("shop@example.com")[0] == 530
        client.starttls(context=ssl.create_default_context(cafile=cert))
        client.ehlo()
        client.login("anyone", key)
        code, text = _submit(client, _message(), "shop@example.com", ["alice@example.org"])
    assert code == 250, text


def test_without_a_certificate_it_refuses_to_listen_beyond_loopback():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mailservice.settings",
        "MAIL_SMTP_LISTEN": f"0.0.0.0:{free_port()}",
        "MAIL_SMTP_TLS_CERT": "",
        "MAIL_SMTP_TLS_KEY": "",
    }
    result = subprocess.run([sys.executable, "manage.py", "smtpd"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert "MAIL_SMTP_TLS_CERT" in result.stderr
    assert "loopback" in result.stderr


def test_it_stops_cleanly_on_sigterm(services):
    port = _start_smtpd(services)
    process = services.processes[-1]
    with _client(port, _key()):
        process.terminate()
        wait_for(process.exited, timeout=15, what="smtpd to exit")
    assert process.popen.returncode == 0


def _send_together(clients: list[smtplib.SMTP], messages: list[bytes], *, before_answers=None) -> list[tuple[int, str]]:
    """Each message sent on its own client's session, all at once; (code, text) of each DATA reply, in order.
    `before_answers` runs once every message is sent, before any reply is read."""
    sent = threading.Barrier(len(clients) + 1)
    replies: list[tuple[int, str] | None] = [None] * len(clients)

    def send(client: smtplib.SMTP, message: bytes, index: int) -> None:
        assert client.mail("shop@example.com")[0] == 250
        assert client.rcpt("alice@example.org")[0] == 250
        assert client.putcmd("data") is None and client.getreply()[0] == 354
        client.send(message + b".\r\n")  # smtplib's data() without its wait for the reply
        sent.wait(timeout=30)
        code, text = client.getreply()
        replies[index] = (code, text.decode())

    threads = [
        threading.Thread(target=send, args=args) for args in zip(clients, messages, range(len(clients)), strict=True)
    ]
    for thread in threads:
        thread.start()
    sent.wait(timeout=30)
    if before_answers is not None:
        before_answers()
    for thread in threads:
        thread.join(timeout=60)
    return replies


def _inserts_waiting() -> bool:
    """Whether a session waits for a lock on the emails table (pg_locks: read afresh inside a transaction too)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'emails_email'::regclass")
        return cursor.fetchone()[0] > 0


def test_messages_of_concurrent_sessions_committed_together_each_get_their_own_reply(services):
    key, limited = _key(), _key(senders=["example.com"])
    port = _start_smtpd(services, "--processes", "1")
    sends = [(key, _message(Subject=f"Order {n}")) for n in range(6)]
    sends.insert(3, (limited, _message(From="ops@elsewhere.org")))  # refused by the service, among the others
    sends.append((limited, _message(Subject="From the limited key")))
    clients = [_client(port, key) for key, _ in sends]

    # The table locked: the first message's insert waits, and the others arrive meanwhile, to be committed
    # together once it is done.
    with connection.cursor() as locking:
        locking.execute("BEGIN")
        locking.execute("LOCK TABLE emails_email IN EXCLUSIVE MODE")

        def release() -> None:
            wait_for(_inserts_waiting, timeout=30, what="the first insert to wait for the lock")
            locking.execute("COMMIT")

        replies = _send_together(clients, [message for _, message in sends], before_answers=release)

    codes = [code for code, _ in replies]
    assert codes == [250, 250, 250, 550, 250, 250, 250, 250], replies
    assert replies[3][1].startswith("5.7.1") and "from" in replies[3][1]
    ids = [ACCEPTED.search(text).group(1) for code, text in replies if code == 250]
    assert len(set(ids)) == 7
    # Each 250 names its own message's email, committed when it was answered.
    subjects = [Email.objects.get(id=email_id).subject for email_id in ids]
    assert subjects == [f"Order {n}" for n in range(6)] + ["From the limited key"]
    assert Email.objects.count() == 7
    # Stored together: the emails of one statement have one creation time.
    created = Email.objects.filter(api_key__key_hash=ApiKey.hash(key)).values_list("created_at", flat=True)
    assert len(set(created)) < len(created)


def test_messages_committed_together_while_the_database_is_down_are_each_451_then_taken(services, own_postgres):
    key = _create_key(own_postgres.url)
    port = _start_smtpd(services, "--processes", "1", DATABASE_URL=own_postgres.url)
    clients = [_client(port, key) for _ in range(4)]  # logged in while the database answers
    messages = [_message(Subject=f"Order {n}") for n in range(4)]
    own_postgres.stop()
    replies = _send_together(clients, messages)
    assert [code for code, _ in replies] == [451] * 4
    own_postgres.start()
    replies = _send_together(clients, messages)  # the same sessions: a client retries on its connection
    assert [code for code, _ in replies] == [250] * 4, replies
    ids = sorted(ACCEPTED.search(text).group(1) for _, text in replies)
    assert sorted(row[0] for row in own_postgres.query("SELECT id::text FROM emails_email")) == ids


def _children(process: Process, count: int) -> list[int]:
    """The ids of the `count` processes that `process` started (it answers before it has started them all)."""

    def started() -> list[int] | None:
        with open(f"/proc/{process.popen.pid}/task/{process.popen.pid}/children") as children:
            pids = [int(child) for child in children.read().split()]
        return pids if len(pids) == count else None

    return wait_for(started, timeout=30, what=f"smtpd's {count} processes")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1].startswith("Z")  # ended, not yet collected


@pytest.mark.skipif(sys.platform != "linux", reason="--processes above 1 is Linux's SO_REUSEPORT")
def test_with_three_processes_every_session_is_served_and_sigterm_stops_them_all(services):
    key = _key()
    port = _start_smtpd(services, "--processes", "3")
    process = services.processes[-1]
    children = _children(process, 3)
    clients = [_client(port, key) for _ in range(12)]
    replies = _send_together(clients, [_message(Subject=f"Order {n}") for n in range(12)])
    assert [code for code, _ in replies] == [250] * 12, replies
    assert Email.objects.count() == 12
    process.terminate()  # the parent only, as Kubernetes and Docker send it
    wait_for(process.exited, timeout=30, what="smtpd to exit")
    assert process.popen.returncode == 0, process.log()
    assert all(_gone(child) for child in children)


@pytest.mark.skipif(sys.platform != "linux", reason="--processes above 1 is Linux's SO_REUSEPORT")
def test_with_processes_ctrl_c_stops_them_all_cleanly(services):
    port = _start_smtpd(services, "--processes", "2")
    process = services.processes[-1]
    children = _children(process, 2)
    with _client(port, _key()):
        process.signal_group(signal.SIGINT)  # what a terminal's Ctrl-C sends: to every process of the group
        wait_for(process.exited, timeout=30, what="smtpd to exit")
    assert process.popen.returncode == 0, process.log()
    assert all(_gone(child) for child in children)


@pytest.mark.skipif(sys.platform != "linux", reason="--processes above 1 is Linux's SO_REUSEPORT")
def test_a_process_that_dies_ends_the_server_with_status_1_for_its_supervisor(services):
    port = _start_smtpd(services, "--processes", "2")
    process = services.processes[-1]
    first, second = _children(process, 2)
    os.kill(first, signal.SIGKILL)
    wait_for(process.exited, timeout=30, what="smtpd to exit")
    assert process.popen.returncode == 1
    assert _gone(second)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


@pytest.mark.skipif(sys.platform != "linux", reason="--processes above 1 is Linux's SO_REUSEPORT")
def test_a_second_server_on_a_taken_address_refuses_to_start(services):
    port = _start_smtpd(services, "--processes", "2")
    env = {**services.env, "MAIL_SMTP_LISTEN": f"127.0.0.1:{port}"}
    for processes in ("1", "2"):
        result = subprocess.run([sys.executable, "manage.py", "smtpd", "--processes", processes], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode != 0
        assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr
