"""HTTP tests: the real FastAPI app, driven through its ASGI interface, against the real
database process started by the session fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fhir_server.config import Settings
from fhir_server.rest.app import create_app

BASE = "http://testserver/fhir"
JSON = "application/fhir+json"


@pytest.fixture(scope="module")
def client(mongo_uri: str, database_name: str) -> Iterator[TestClient]:
    settings = Settings(mongodb_db=database_name)
    app = create_app(settings, mongo_uri)
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client
        app.state.fhir.store.drop_everything()


def patient(family: str = "Martin", given: str = "Élodie", **extra) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}], **extra}


def issue_expressions(outcome: dict) -> list[str]:
    return [e for issue in outcome.get("issue", []) for e in issue.get("expression", [])]
