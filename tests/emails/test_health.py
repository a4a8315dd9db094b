import pytest

pytestmark = pytest.mark.django_db


def test_health_answers_while_the_process_runs(client):
    response = client.get("/health")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_ready_answers_when_postgres_and_redis_answer(client):
    response = client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "postgres": "ok", "redis": "ok"}
