"""The OpenAPI schema describes the API as it answers: schemathesis fuzzes every operation of the
live schema (real gunicorn, PostgreSQL, Redis) and finds no server error and no off-schema response."""

import subprocess
import sys
from pathlib import Path

import pytest

from emails.services import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def test_schema_is_served(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/v1/emails/batch" in response.content
    assert client.get("/api/docs/").status_code == 200


def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(services, tmp_path):
    _, key = api_key_create(name="schemathesis")
    url = services.web()
    report = tmp_path / "schemathesis.log"

    with report.open("w") as out:
        result = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{url}/api/schema/", "--url", url,
             "--header", f"Authorization: Bearer {key}",
             "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                         "response_headers_conformance,response_schema_conformance",
             "--max-examples", "30", "--seed", "1", "--no-color"],
            stdout=out, stderr=subprocess.STDOUT, timeout=300,
        )  # fmt: skip

    assert result.returncode == 0, report.read_text()[-6000:]
