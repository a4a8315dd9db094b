"""A connection lost after the message was handed over marks the attempt as possibly sent: the provider
may have taken the message, so a retry may deliver it twice. A connection lost before cannot have sent it."""

import datetime
import http.server
import ipaddress
import smtplib
import ssl
import threading

import pytest
import requests
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.mail import EmailMessage

from providers.base import Provider
from providers.errors import MessageMaybeDelivered, ProviderError, classify
from providers.registry import parse_provider
from providers.smtp import data_payload
from tests.sink import DROP, HANG, OK_THEN_DROP, SmtpSink, free_port

MAILGUN_API = "https://api.mailgun.net/v3/example.com/messages"


def _message(email_id: str = "e-1") -> EmailMessage:
    return EmailMessage(
        "Your order",
        "Thank you for your order.",
        "shop@example.com",
        ["alice@example.org"],
        headers={"X-Mailservice-Id": email_id},
    )


def _smtp_provider(port: int, **options) -> Provider:
    options = {"host": "127.0.0.1", "port": port, "timeout": 10, **options}
    return Provider(parse_provider({"name": "smtp", "backend": "smtp", "options": options}, 0))


def _send_error(provider: Provider, message: EmailMessage | None = None) -> ProviderError:
    try:
        with pytest.raises(ProviderError) as raised:
            provider.send(message or _message())
    finally:
        provider.close()
    return raised.value


# SMTP, against a real server (aiosmtpd)


def test_it_marks_a_drop_after_data_as_possibly_sent(sink):
    sink.script(DROP)  # the server takes the message, then closes without replying

    error = _send_error(_smtp_provider(sink.port))

    assert (error.possibly_sent, error.permanent) == (True, False)
    assert error.kind == "transient, possibly sent"
    assert isinstance(error.__cause__, MessageMaybeDelivered)
    assert [r.email_id for r in sink.received] == ["e-1"]  # the server did get the whole message


def test_it_marks_a_reply_timeout_after_data_as_possibly_sent(sink):
    sink.script(HANG)  # the server takes the message and never replies

    error = _send_error(_smtp_provider(sink.port, timeout=1))

    assert (error.possibly_sent, error.permanent) == (True, False)
    assert "timed out" in error.reason


def test_a_retry_after_a_drop_after_data_delivers_a_duplicate(sink):
    """Why the mark matters: the retry's message is the second one the server has."""
    sink.script(DROP)
    provider = _smtp_provider(sink.port)

    with pytest.raises(ProviderError):
        provider.send(_message("e-7"))
    provider.send(_message("e-7"))  # on a new connection
    provider.close()

    assert sink.count_by_id()["e-7"] == 2


@pytest.fixture
def tls_sink(tmp_path, monkeypatch):
    """A sink speaking implicit TLS with a self-signed certificate for 127.0.0.1, which clients trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    # Django's backend verifies the server with ssl.create_default_context(), which reads SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server = SmtpSink(ssl_context=context).start()
    yield server
    server.stop()


def test_it_marks_a_drop_after_data_over_implicit_tls_as_possibly_sent(tls_sink):
    tls_sink.script("250 2.0.0 OK", DROP)
    provider = _smtp_provider(tls_sink.port, use_ssl=True)
    provider.send(_message("e-1"))  # TLS works: the first message goes through

    error = _send_error(provider, _message("e-2"))

    assert (error.possibly_sent, error.permanent) == (True, False)
    assert [r.email_id for r in tls_sink.received] == ["e-1", "e-2"]


@pytest.mark.parametrize(
    ("command", "behaviour"),
    [("MAIL", DROP), ("RCPT", DROP), ("RCPT", OK_THEN_DROP), ("MAIL", HANG)],
    ids=["drop at MAIL", "drop at RCPT", "drop at the DATA command", "timeout at MAIL"],
)
def test_it_does_not_mark_a_drop_before_the_message_went_out(sink, command, behaviour):
    sink.script_command(command, behaviour)

    error = _send_error(_smtp_provider(sink.port, timeout=1))

    assert (error.possibly_sent, error.permanent) == (False, False)
    assert error.kind == "transient"
    assert isinstance(error.__cause__, smtplib.SMTPServerDisconnected)
    assert not isinstance(error.__cause__, MessageMaybeDelivered)
    assert sink.received == []


def test_it_does_not_mark_a_refused_connection():
    error = _send_error(_smtp_provider(free_port()))  # nothing listens there

    assert (error.possibly_sent, error.permanent) == (False, False)
    assert isinstance(error.__cause__, ConnectionRefusedError)


def test_it_does_not_mark_a_message_the_server_refused(sink):
    sink.script("451 4.3.0 Try again later")

    error = _send_error(_smtp_provider(sink.port))

    assert (error.possibly_sent, error.permanent, error.code) == (False, False, 451)
    assert error.kind == "transient 451"


def test_it_sends_the_message_with_periods_doubled_and_a_final_crlf_as_smtplib_does():
    assert data_payload(b"a\r\n.b\r\n..c\r\n.\r\nd") == b"a\r\n..b\r\n...c\r\n..\r\nd\r\n.\r\n"
    assert data_payload(b"a\r\n") == b"a\r\n.\r\n"
    assert data_payload(b"") == b"\r\n.\r\n"
    assert data_payload("a\n.b\rc") == b"a\r\n..b\r\nc\r\n.\r\n"  # a str gets CRLF line ends


# ESPs through anymail (requests), faked at the HTTP boundary


@pytest.fixture
def api():
    with responses.RequestsMock() as mock:
        yield mock


def _mailgun(**options) -> Provider:
    entry = {"name": "mailgun", "backend": "mailgun", "options": {"api_key": "key-test", **options}}
    return Provider(parse_provider(entry, 0))


def test_it_marks_a_read_timeout_of_an_esp_as_possibly_sent(api):
    api.post(MAILGUN_API, body=requests.exceptions.ReadTimeout("Read timed out. (read timeout=30)"))

    error = _send_error(_mailgun())

    assert (error.possibly_sent, error.permanent, error.code) == (True, False, None)
    assert error.kind == "transient, possibly sent"


def test_it_does_not_mark_a_connect_timeout_of_an_esp(api):
    api.post(MAILGUN_API, body=requests.exceptions.ConnectTimeout("Connection to api.mailgun.net timed out."))

    error = _send_error(_mailgun())

    assert (error.possibly_sent, error.permanent) == (False, False)


def test_it_does_not_mark_an_esps_http_error(api):
    api.post(MAILGUN_API, status=503, body="Service Unavailable")

    error = _send_error(_mailgun())

    assert (error.possibly_sent, error.permanent, error.code) == (False, False, 503)


class _HangUpAfterTheRequest(http.server.BaseHTTPRequestHandler):
    """Reads the whole request, then closes the connection without a response."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.close_connection = True

    def log_message(self, format, *args):  # quiet
        pass


@pytest.fixture
def hang_up_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _HangUpAfterTheRequest)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v3"
    server.shutdown()
    server.server_close()
    thread.join()


def test_it_marks_an_esp_connection_aborted_after_the_request_as_possibly_sent(hang_up_server):
    """A real server, so that the exceptions are chained as requests and urllib3 chain them:
    anymail's error from requests' ConnectionError, raised while handling urllib3's ProtocolError."""
    error = _send_error(_mailgun(api_url=hang_up_server))

    assert (error.possibly_sent, error.permanent) == (True, False)
    assert isinstance(error.__cause__, requests.exceptions.ConnectionError)


def test_it_does_not_mark_an_esp_connection_refused():
    error = _send_error(_mailgun(api_url=f"http://127.0.0.1:{free_port()}/v3"))  # nothing listens there

    assert (error.possibly_sent, error.permanent) == (False, False)
    assert isinstance(error.__cause__, requests.exceptions.ConnectionError)


# classify() and ProviderError


def test_classify_marks_only_a_drop_after_the_message_as_possibly_sent():
    assert classify(MessageMaybeDelivered("Connection unexpectedly closed")).possibly_sent is True
    assert classify(smtplib.SMTPServerDisconnected("Connection unexpectedly closed")).possibly_sent is False
    assert classify(TimeoutError("timed out")).possibly_sent is False


def test_a_provider_error_is_not_possibly_sent_unless_told():
    assert ProviderError("x", permanent=False, code=503).kind == "transient 503"
    assert ProviderError("x", permanent=False, code=503).possibly_sent is False
    assert ProviderError("x", permanent=False, possibly_sent=True).kind == "transient, possibly sent"
