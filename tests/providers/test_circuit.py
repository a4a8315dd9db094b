"""The breaker's states, shared in Redis."""

import pytest

from providers import circuit


@pytest.fixture
def quick(settings):
    settings.MAIL_CIRCUIT_THRESHOLD = 3
    settings.MAIL_CIRCUIT_COOLDOWN = 0.2


def test_it_opens_after_the_threshold_of_consecutive_failures(quick):
    assert [circuit.record_failure("esp") for _ in range(3)] == [False, False, True]
    assert circuit.allow("esp").allowed is False
    assert circuit.state("esp")["state"] == "open"


def test_a_success_resets_the_count(quick):
    circuit.record_failure("esp")
    circuit.record_failure("esp")
    circuit.record_success("esp", circuit.allow("esp"))

    assert circuit.record_failure("esp") is False
    assert circuit.state("esp")["failures"] == 1


def test_after_the_cooldown_one_probe_at_a_time_decides(quick):
    from tests.processes import wait_for

    for _ in range(3):
        circuit.record_failure("esp")

    probe = wait_for(lambda: circuit.allow("esp").probe, timeout=5, what="the half-open probe")
    assert probe is True
    assert circuit.allow("esp").allowed is False  # a second sender waits for the probe's outcome

    assert circuit.record_failure("esp") is True  # the probe failed: open again
    assert circuit.state("esp")["state"] == "open"
    permit = wait_for(lambda: circuit.allow("esp") if circuit.allow("esp").probe else None, timeout=5, what="probe")
    circuit.record_success("esp", permit)
    assert circuit.state("esp")["state"] == "closed"
    assert circuit.allow("esp").allowed is True
