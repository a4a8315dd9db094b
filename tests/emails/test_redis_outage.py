"""Redis down at submit: the API still accepts (the row is the record) and the sweep sends it later."""

import json
import urllib.request

import pytest

from emails.models import Email
from tests.conftest import email_payload
from tests.processes import RedisServer, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _request(url: str, *, key: str = "", body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, method="POST" if body is not None else "GET")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
        request.data = json.dumps(body).encode()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def test_it_accepts_while_redis_is_down_and_the_sweep_sends_later(sending_to_sink, services, own_redis):
    from emails.services import api_key_create

    _, key = api_key_create(name="outage")
    url = services.web(REDIS_URL=own_redis.url)
    own_redis.stop()

    status, body = _request(f"{url}/api/v1/emails", key=key, body=email_payload())
    assert status == 202
    assert body["status"] == "PENDING"
    status, ready = _request(f"{url}/health/ready")
    assert status == 503
    assert ready["redis"].startswith("unavailable")
    assert ready["postgres"] == "ok"
    assert Email.objects.get(id=body["id"]).status == Email.Status.PENDING

    own_redis.start()  # back, on the same port, and empty: the enqueue is lost for good
    assert _request(f"{url}/health/ready")[0] == 200
    env = {"REDIS_URL": own_redis.url, "MAIL_SWEEP_INTERVAL": "1"}
    services.worker(**env)
    services.beat(**env)

    wait_for(lambda: Email.objects.filter(id=body["id"], status=Email.Status.SENT).exists(), timeout=60, what="SENT")
    assert [r.email_id for r in sending_to_sink.received] == [body["id"]]
