"""A template renders within MAIL_TEMPLATE_RENDER_SECONDS and the size limit, whatever the context: the
attacks of issue 13, replayed. A render that overruns is stopped by killing its render process."""

import json
import statistics
import threading
import time
import urllib.request

import pytest

from emails.models import Email, Template
from tests.conftest import email_payload

pytestmark = pytest.mark.django_db

# The stored template of the finding: a loop over the request's context, nested.
NESTED_LOOP = "{% for a in rows %}{% for b in rows %}{{ a }}{{ b }}{% endfor %}{% endfor %}"
FOUR_MB_OF_ROWS = [f"row-{i:05d}" for i in range(400_000)]  # 400,000 x 10 bytes of JSON


def _send(client, template: str, context: dict):
    payload = {k: v for k, v in email_payload(template=template, context=context).items() if k != "text"}
    started = time.monotonic()
    response = client.post("/api/v1/emails", payload, format="json")
    return response, time.monotonic() - started


@pytest.fixture
def warm(alice) -> None:
    """A render process is started (about 0.1 s, once per web process), so the timings are the renders'."""
    Template.objects.create(name="hello", subject="Hi", text="Hello {{ name }}")
    assert _send(alice, "hello", {"name": "Ada"})[0].status_code == 202


def test_the_98_second_template_is_a_400_within_the_render_seconds(alice, warm, settings):
    settings.MAIL_TEMPLATE_RENDER_SECONDS = 0.5
    Template.objects.create(name="report", subject="Report", text=NESTED_LOOP)

    response, took = _send(alice, "report", {"rows": FOUR_MB_OF_ROWS})

    assert response.status_code == 400
    assert response.json() == {
        "template": ["Template 'report' does not render: it takes more than 0.5 s with this context."]
    }
    assert took < 0.5 + 1.5  # the margin: parsing and passing 4 MB of JSON
    assert not Email.objects.filter(template="report").exists()
    assert _send(alice, "hello", {"name": "Ada"})[0].status_code == 202  # its render process was replaced


def test_a_filter_padding_to_a_gigabyte_is_a_400_without_allocating_it(alice, warm, settings):
    settings.MAIL_TEMPLATE_RENDER_SECONDS = 30  # only the memory bound can stop it in time
    Template.objects.create(name="pad", subject="Hi", text='{{ name|ljust:"1000000000" }}')

    response, took = _send(alice, "pad", {"name": "Ada"})

    assert response.status_code == 400
    [reason] = response.json()["template"]
    assert reason.startswith("Template 'pad' does not render: it needs more than ")  # the allocation failed
    assert took < 1


def test_a_loop_rendering_gigabytes_is_a_400_before_allocating_them(alice, warm, settings):
    settings.MAIL_TEMPLATE_RENDER_SECONDS = 30
    settings.MAIL_MAX_EMAIL_BYTES = 1_000_000
    Template.objects.create(
        name="bomb", subject="Hi", text="{% for a in rows %}{% for b in rows %}{{ pad }}{% endfor %}{% endfor %}"
    )

    # 2,000 x 2,000 x 1 kB: 4 GB of text
    response, took = _send(alice, "bomb", {"rows": list(range(2000)), "pad": "x" * 1000})

    assert response.status_code == 400
    [reason] = response.json()["template"]
    assert reason.startswith("Template 'bomb' does not render: it needs more than ")
    assert took < 5


def test_a_loop_rendering_past_the_size_limit_is_a_400_naming_template(alice, warm, settings):
    settings.MAIL_MAX_EMAIL_BYTES = 1_000_000
    Template.objects.create(name="long", subject="Hi", text="{% for a in rows %}{{ pad }}{% endfor %}")

    response, _ = _send(alice, "long", {"rows": list(range(2000)), "pad": "x" * 1000})

    assert response.status_code == 400
    assert response.json() == {
        "template": ["Template 'long' does not render: it renders more than 1000000 bytes with this context."]
    }


def test_a_batch_of_slow_renders_holds_the_thread_no_longer_than_the_render_seconds(alice, warm, settings):
    settings.MAIL_TEMPLATE_RENDER_SECONDS = 0.5
    Template.objects.create(name="report", subject="Report", text=NESTED_LOOP)
    item = {
        k: v for k, v in email_payload(template="report", context={"rows": list(range(5000))}).items() if k != "text"
    }

    started = time.monotonic()
    response = alice.post("/api/v1/emails/batch", {"emails": [item] * 20}, format="json")
    took = time.monotonic() - started

    results = response.json()["results"]
    assert [list(result["errors"]) for result in results] == [["template"]] * 20
    assert took < 0.5 + 1


def test_four_slow_renders_at_once_do_not_slow_a_normal_submit(services):
    from emails.services import api_key_create

    _, key = api_key_create(name="tenant")
    Template.objects.create(name="report", subject="Report", text=NESTED_LOOP)
    Template.objects.create(name="hello", subject="Hi {{ name }}", text="Hello {{ name }}")
    url = services.web(MAIL_TEMPLATE_RENDER_SECONDS="2")

    def submit(template: str, context: dict) -> tuple[int, dict, float]:
        body = {k: v for k, v in email_payload(template=template, context=context).items() if k != "text"}
        request = urllib.request.Request(f"{url}/api/v1/emails", data=json.dumps(body).encode(), method="POST")
        request.add_header("Authorization", f"Bearer {key}")
        request.add_header("Content-Type", "application/json")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, answer = response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            status, answer = error.code, json.loads(error.read())
        return status, answer, time.monotonic() - started

    def normal() -> float:
        status, _, took = submit("hello", {"name": "Ada"})
        assert status == 202
        return took

    quiet = [normal() for _ in range(20)]
    slow: list[tuple[int, dict, float]] = []
    attackers = [
        threading.Thread(target=lambda: slow.append(submit("report", {"rows": FOUR_MB_OF_ROWS}))) for _ in range(4)
    ]
    for attacker in attackers:
        attacker.start()
    busy = []
    while any(attacker.is_alive() for attacker in attackers):
        busy.append(normal())
    for attacker in attackers:
        attacker.join()

    print(f"normal submit: quiet median {statistics.median(quiet) * 1000:.1f} ms, under attack median "
          f"{statistics.median(busy) * 1000:.1f} ms, max {max(busy) * 1000:.1f} ms ({len(busy)} submits); "
          f"attacks took {[round(took, 2) for _, _, took in slow]} s")  # fmt: skip
    assert [(status, list(answer)) for status, answer, _ in slow] == [(400, ["template"])] * 4
    assert all(took < 2 + 3 for _, _, took in slow)
    assert len(busy) >= 5
    assert statistics.median(busy) < max(0.25, 5 * statistics.median(quiet))
