"""MAIL_METRICS_TOKEN: the attack replayed is anyone reading /metrics (traffic, providers, failure rates) and making
it query the database on every request. With the token set, only `Authorization: Bearer <token>` gets them."""

from __future__ import annotations

import pytest

TOKEN = "a-metrics-token-of-32-random-chars"


@pytest.fixture
def metrics_token(settings):
    settings.MAIL_METRICS_TOKEN = TOKEN


@pytest.mark.django_db
def test_without_a_token_metrics_are_a_401_that_queries_nothing(client, metrics_token, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"mailservice_" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer ", f"Bearer {'x' * 8000}"],
)
def test_a_wrong_token_is_a_401_too(client, metrics_token, authorization):
    response = client.get("/metrics", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 401
    assert b"mailservice_" not in response.content


@pytest.mark.django_db
def test_the_right_token_gets_the_metrics(client, metrics_token):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert b"mailservice_queue_depth" in response.content


@pytest.mark.django_db
def test_without_mail_metrics_token_metrics_stay_open(client, settings):
    settings.MAIL_METRICS_TOKEN = ""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"mailservice_queue_depth" in response.content
