"""A template renders within MAIL_TEMPLATE_RENDER_SECONDS and the size limit, whatever the context: the
attacks of issue 13, replayed. A render that overruns is stopped by killing its render process."""

import errno
import html
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from django.template import Context

from emails import rendering
from emails.models import Email, Template
from tests.conftest import email_payload
from tests.processes import ROOT

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


# Render processes: how they fail, end, and what they hold.


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent pid, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    found = ((int(entry.name), _stat(int(entry.name))) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [child for child, stat in found if stat and stat[1] == pid]


def _ended(pid: int) -> bool:
    """Gone, or a zombie (dead, not yet reaped by whoever is its parent now)."""
    return (_stat(pid) or ("Z", 0))[0] in ("Z", "X")


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _idle_pids() -> list[int]:
    return [renderer.process.pid for renderer in rendering._POOL._idle]


@pytest.fixture
def fresh_pool():
    """No render process idle before the test (none started with other settings) or after it."""

    def stop_idle() -> None:
        while (renderer := rendering._POOL._pop()) is not None:
            renderer.stop()

    stop_idle()
    keep = rendering._POOL.keep_idle
    yield rendering._POOL
    rendering._POOL.keep_idle = keep
    stop_idle()


def _session(seconds: float = 5) -> rendering.RenderSession:
    return rendering.RenderSession(seconds=seconds, max_bytes=10_000_000, max_total_bytes=10_000_000)


HELLO = ("Hi {{ name }}", "Hello {{ name }}", "")


@pytest.mark.parametrize("seen", ["when_taken", "only_when_sent"])
def test_an_idle_render_process_that_died_is_replaced_and_the_next_submit_is_accepted(alice, warm, monkeypatch, seen):
    [pid, *_] = pids = _idle_pids()
    for each in pids:  # the OOM killer, an operator
        os.kill(each, signal.SIGKILL)
    assert _wait_until(lambda: all(_ended(each) for each in pids), timeout=5)
    if seen == "only_when_sent":  # it dies between being taken and being sent the render
        monkeypatch.setattr(rendering._Renderer, "alive", lambda self: True)

    response, _ = _send(alice, "hello", {"name": "Ada"})

    assert response.status_code == 202, response.json()
    assert response.json()["text"] == "Hello Ada"
    assert pid not in _idle_pids()
    assert not any(_stat(each) for each in pids)  # reaped


def test_a_render_process_killed_mid_render_renders_again_in_another(fresh_pool):
    rows = list(range(300_000))
    template = ("Hi", "{% for a in rows %}{{ a }},{% endfor %}", "")
    with _session(seconds=20) as session:
        killed: list[int] = []

        def kill_it() -> None:
            _wait_until(lambda: session._renderer is not None, timeout=5)
            time.sleep(0.1)
            killed.append(session._renderer.process.pid)
            os.kill(killed[0], signal.SIGKILL)

        killer = threading.Thread(target=kill_it)
        killer.start()
        result = session.render(template, {"rows": rows})
        killer.join()

        assert result["text"] == "".join(f"{a}," for a in rows)
        assert session._renderer.process.pid != killed[0]


def test_a_render_process_that_cannot_be_started_is_render_unavailable(fresh_pool, monkeypatch):
    def no_process(*args, **kwargs):
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(rendering.subprocess, "Popen", no_process)

    with _session() as session, pytest.raises(rendering.RenderUnavailable, match="could not be started"):
        session.render(HELLO, {"name": "Ada"})


def test_a_start_that_fails_once_is_retried(fresh_pool, monkeypatch):
    popen, calls = subprocess.Popen, []

    def fails_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return popen(*args, **kwargs)

    monkeypatch.setattr(rendering.subprocess, "Popen", fails_once)

    with _session() as session:
        assert session.render(HELLO, {"name": "Ada"})["text"] == "Hello Ada"
    assert len(calls) == 2


def test_a_render_process_that_dies_starting_is_retried_then_render_unavailable(fresh_pool, monkeypatch):
    # A setting name the render process refuses: it exits before it is ready, each time.
    monkeypatch.setattr(rendering, "_child_settings", lambda: {"not_a_setting": 1})

    started = time.monotonic()
    with _session() as session, pytest.raises(rendering.RenderUnavailable, match="could not be started"):
        session.render(HELLO, {"name": "Ada"})
    assert time.monotonic() - started < 5


def test_a_start_that_would_pass_the_deadline_is_render_unavailable_and_the_process_is_kept(fresh_pool):
    started = time.monotonic()
    with _session(seconds=0.01) as session, pytest.raises(rendering.RenderUnavailable, match="ready in time"):
        session.render(HELLO, {"name": "Ada"})

    assert time.monotonic() - started < 0.3  # a start takes ~0.1 s; the thread is not held for it
    [pid] = _idle_pids()  # the start goes on, for the next request
    with _session() as session:
        assert session.render(HELLO, {"name": "Ada"})["text"] == "Hello Ada"
        assert session._renderer.process.pid == pid


def test_as_many_render_processes_stay_idle_as_threads_render_at_once(fresh_pool, monkeypatch):
    rendering.start(8)
    starts: list[int] = []
    init = rendering._Renderer.__init__
    monkeypatch.setattr(rendering._Renderer, "__init__", lambda self: (starts.append(1), init(self))[1])
    barrier = threading.Barrier(8)
    results: list[str] = []

    def render() -> None:
        with _session() as session:
            barrier.wait()  # all 8 hold a render process at once
            results.append(session.render(HELLO, {"name": "Ada"})["text"])
            barrier.wait()

    for _round in range(3):
        threads = [threading.Thread(target=render) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert results == ["Hello Ada"] * 24
    assert starts == []
    assert len(_idle_pids()) == 8


def _zombie_children() -> set[int]:
    return {pid for pid in _children(os.getpid()) if _stat(pid)[0] == "Z"}


def test_render_processes_that_end_are_reaped(fresh_pool):
    zombies = _zombie_children()
    fresh_pool.keep_idle = 0  # each session's process is stopped when the session closes
    for _ in range(3):
        with _session() as session:
            session.render(HELLO, {"name": "Ada"})
    with _session(seconds=0.3) as session:  # killed at its deadline
        assert isinstance(session.render(("", NESTED_LOOP, ""), {"rows": list(range(5000))}), rendering.RenderFailure)

    time.sleep(0.2)
    assert _zombie_children() - zombies == set()


def test_a_forked_child_starts_with_a_fresh_pool(warm):
    [renderer] = [r for r in rendering._POOL._idle if r.ready][-1:]
    with rendering._POOL._lock:  # held by this thread, as a thread may hold it when another forks
        pid = os.fork()
        if pid == 0:
            try:
                fresh = rendering._POOL._lock.acquire(timeout=1) and rendering._POOL._idle == []
                os._exit(0 if fresh and renderer.connection.closed else 1)
            finally:
                os._exit(2)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    with _session() as session:  # this process's renderer still works
        assert session.render(HELLO, {"name": "Ada"})["text"] == "Hello Ada"


def test_a_render_process_has_the_template_settings_and_no_secret(fresh_pool, settings, monkeypatch):
    monkeypatch.setenv("MAIL_WEBHOOK_SECRET", "webhook-secret")
    monkeypatch.setenv("ANYMAIL_POSTMARK_SERVER_TOKEN", "anymail-secret")
    settings.DEBUG = True  # {% debug %} then shows every module the render process imported
    settings.TIME_ZONE = "Europe/Paris"

    with _session() as session:
        result = session.render(("", '{% now "e" %} {% debug %}', ""), {"name": "Ada"})
        environ = Path(f"/proc/{session._renderer.process.pid}/environ").read_bytes().decode()

    here = rendering.TEXT_ENGINE.from_string('{% now "e" %}').render(Context())
    assert here in ("CET", "CEST") and result["text"].startswith(f"{here} ")  # the time zone reached it
    modules = html.unescape(result["text"])
    assert "'django.template'" in modules
    project = ("mailservice", "mailservice.settings", "tests.settings", "emails.models")
    assert [name for name in project if f"'{name}'" in modules] == []  # the project's settings are not imported
    names = {entry.split("=", 1)[0] for entry in environ.split("\0") if entry}
    assert names <= {"PYTHONPATH", "TZ", "LANG", "LC_ALL", "LC_CTYPE"}
    assert "secret" not in environ and "SECRET_KEY" not in environ


def test_a_render_left_running_ends_after_its_cpu_seconds(fresh_pool):
    # As if its web process had not killed it at the deadline.
    renderer = rendering._POOL.take(time.monotonic() + 30)
    try:
        renderer.connection.send((("", NESTED_LOOP, ""), {"rows": FOUR_MB_OF_ROWS}, 10**12, 0.0))
        returncode = renderer.process.wait(timeout=10)
    finally:
        renderer.stop()

    assert returncode == -signal.SIGXCPU


PARENT = """
import os, sys, threading, time
import django
django.setup()
from emails import rendering
session = rendering.RenderSession(seconds=60, max_bytes=10**12, max_total_bytes=10**12)
template = ("", "{% for a in rows %}{% for b in rows %}{{ a }}{{ b }}{% endfor %}{% endfor %}", "")
threading.Thread(target=session.render, args=(template, {"rows": list(range(100_000))}), daemon=True).start()
while session._renderer is None:
    time.sleep(0.01)
print(session._renderer.process.pid, flush=True)
time.sleep(60)
"""


def test_a_render_process_dies_with_its_web_process_mid_render():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=env, cwd=ROOT, stdout=subprocess.PIPE)
    try:
        pid = int(parent.stdout.readline())
        time.sleep(0.5)
        assert _stat(pid)[0] in ("R", "S")  # rendering

        parent.kill()  # as the OOM killer or gunicorn's arbiter would, mid-render
        parent.wait()

        assert _wait_until(lambda: _ended(pid), timeout=3)
    finally:
        parent.kill()
        parent.wait()


def test_gunicorn_starts_a_render_process_per_thread(services):
    services.web(WEB_THREADS="3")
    [master] = [process.popen.pid for process in services.processes]
    [worker] = _children(master)

    def render_processes() -> list[int]:
        return [pid for pid in _children(worker) if b"emails.rendering" in Path(f"/proc/{pid}/cmdline").read_bytes()]

    assert _wait_until(lambda: len(render_processes()) == 3, timeout=5)


def test_a_submit_when_no_render_process_can_be_started_is_a_503_with_retry_after(alice, fresh_pool, monkeypatch):
    Template.objects.create(name="hello", subject="Hi {{ name }}", text="Hello {{ name }}")

    def no_process(*args, **kwargs):
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(rendering.subprocess, "Popen", no_process)  # the machine is out of processes
    response = alice.post("/api/v1/emails", email_payload(template="hello", context={"name": "Ada"}), format="json")

    assert (response.status_code, response["Retry-After"]) == (503, "5")
    assert response.json() == {"detail": "Templates cannot be rendered right now; try again shortly."}
    assert not Email.objects.exists()
