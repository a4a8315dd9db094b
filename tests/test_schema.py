"""The OpenAPI schema describes the API as it answers: schemathesis fuzzes every operation of the
live schema (real gunicorn, PostgreSQL, Redis) and finds no server error and no off-schema response."""

import json
import re
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


# Words of the code, not of the API: a schema text that holds one was written for the developers.
INTERNAL_WORDING = re.compile(
    r"(?i:one path for two operations|\bDRF\b|serializer|_reusable|queryset|\bORM\b|\bTODO\b|\bFIXME\b|"
    r"\binstance\b|\bdocstring\b|\bdeep-?cop)|\b[A-Z]\w*Api\b"  # and class names: EmailListApi
)


def _schema(client) -> dict:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return json.loads(response.content)


def _texts(node, where: str = "") -> list[tuple[str, str]]:
    """Every summary and description in the schema, with where it is."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("summary", "description") and isinstance(value, str):
                found.append((f"{where}/{key}", value))
            else:
                found += _texts(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _texts(value, f"{where}/{index}")
    return found


def _operations(schema: dict) -> list[tuple[str, dict]]:
    return [(f"{method.upper()} {path}", op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def test_no_schema_text_carries_internal_notes(client):
    texts = _texts(_schema(client))

    assert len(texts) > 50
    assert [(where, text) for where, text in texts if INTERNAL_WORDING.search(text)] == []


def test_every_operation_is_described_with_the_errors_it_answers(client):
    for name, operation in _operations(_schema(client)):
        assert operation.get("summary") and len(operation.get("description", "")) > 80, name
        assert {"401", "429", "503"} <= set(operation["responses"]), name
        for code, response in operation["responses"].items():
            assert response.get("description"), f"{name} {code}"
        if name.startswith("POST"):
            assert "400" in operation["responses"], name


def test_every_field_a_client_sends_or_filters_by_is_described(client):
    schema = _schema(client)
    sent = ["EmailCreateRequest", "AttachmentRequest", "EmailBatchCreateRequest"]
    for component in sent:
        for field, spec in schema["components"]["schemas"][component]["properties"].items():
            assert spec.get("description"), f"{component}.{field}"
    for name, operation in _operations(schema):
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), f"{name} {parameter['name']}"
