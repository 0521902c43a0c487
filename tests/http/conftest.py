"""HTTP tests: the real FastAPI app, driven through its ASGI interface, against the real
database process started by the session fixture."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.access.devissuer import mint, system_claims
from fhir_server.config import Settings
from fhir_server.rest.app import create_app
from fhir_server.storage import MongoStore

BASE = "http://testserver/fhir"
JSON = "application/fhir+json"


@pytest.fixture(scope="session")
def issuer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dev-issuer")


@pytest.fixture(scope="module")
def settings(database_name: str, issuer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(mongodb_db=database_name, dev_issuer=True, data_dir=tmp_path_factory.mktemp("data"),
                    dev_issuer_dir_override=issuer_dir)


def bearer(issuer_dir: Path, claims: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(issuer_dir, claims)}"}


@contextmanager
def running_app(mongo_uri: str, settings: Settings, issuer_dir: Path, env: dict[str, str | None] | None = None
                ) -> Iterator[TestClient]:
    """The app on a throw-away database, as a trusted back-end with every SMART system scope;
    `env` sets (or, with None, removes) environment variables while the app is built and runs."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (env or {}).items():
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value)
        app = create_app(settings, mongo_uri)
        headers = bearer(issuer_dir, system_claims("system/*.cruds", "test-harness"))
        with TestClient(app, base_url="http://testserver", headers=headers) as test_client:
            yield test_client
    # dropped once the app (and its background workers) stopped
    store = MongoStore(mongo_uri, settings.mongodb_db)
    store.drop_everything()
    store.close()


@pytest.fixture(scope="module")
def client(mongo_uri: str, settings: Settings, issuer_dir: Path) -> Iterator[TestClient]:
    """A client acting as a trusted back-end software with every SMART system scope."""
    with running_app(mongo_uri, settings, issuer_dir) as test_client:
        yield test_client


def patient(family: str = "Martin", given: str = "Élodie", **extra) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}], **extra}


def issue_expressions(outcome: dict) -> list[str]:
    return [e for issue in outcome.get("issue", []) for e in issue.get("expression", [])]
