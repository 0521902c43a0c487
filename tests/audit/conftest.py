"""Store-backed audit tests: the real database process (tests/conftest.py), the real search
registry for `_index` and the real access policy for `_acl`; one database per test module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from fhir_server.access.actor import Actor
from fhir_server.access.policy import AccessPolicy
from fhir_server.access.scopes import Scopes
from fhir_server.audit import AUDIT_INDEXES, AuditRecord, AuditTrail
from fhir_server.definitions import Definitions, load_definitions
from fhir_server.storage import MongoStore

DOCTOR = Actor("practitioner", "psc-10001234567", Scopes.parse("user/*.rs"), rpps="10001234567", profession="10",
               organization="750712184", purpose_of_use="TREAT", client_id="logiciel-cabinet", name="Jean Dupont")
NURSE = Actor("practitioner", "psc-10009999999", Scopes.parse("user/*.rs"), rpps="10009999999", profession="60",
              client_id="logiciel-ide", name="Anne Leroy")
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def patient_actor(ins: str = "1850575123456") -> Actor:
    return Actor("patient", f"ins-{ins}", Scopes.parse("patient/*.cruds"), ins=ins, client_id="app-mon-espace",
                 name="Élodie Martin")


class _StandInIndexer:
    """Only used while the real registry cannot be imported: the AuditEvent `patient` parameter."""

    def extract_index(self, resource: dict) -> dict:
        refs = [e["what"]["reference"] for e in resource.get("entity", []) if
                e.get("what", {}).get("reference", "").startswith("Patient/")]
        return {"patient": refs} if refs else {}


@pytest.fixture(scope="session")
def definitions() -> Definitions:
    return load_definitions()


@pytest.fixture(scope="session")
def indexer(definitions: Definitions):
    try:
        from fhir_server.search.registry import SearchRegistry
    except ImportError:          # the registry is being finished elsewhere
        return _StandInIndexer()
    return SearchRegistry(definitions)


@pytest.fixture(scope="module")
def store(mongo_uri: str, database_name: str) -> Iterator[MongoStore]:
    store = MongoStore(mongo_uri, database_name)
    store.ensure_collections({"AuditEvent": AUDIT_INDEXES, "Observation": []})
    yield store
    store.drop_everything()
    store.close()


@pytest.fixture(scope="module")
def policy(definitions: Definitions, store: MongoStore) -> AccessPolicy:
    return AccessPolicy(definitions, store, lambda resource_type, params: [])


@pytest.fixture
def trail(store: MongoStore, indexer, policy: AccessPolicy) -> AuditTrail:
    return AuditTrail(store, indexer, policy)


@pytest.fixture
def patient() -> str:
    """A fresh patient per test, so that tests sharing a database have their own chains."""
    return f"Patient/{uuid.uuid4().hex[:12]}"


def read_record(patient: str, minutes: int = 0, actor: Actor = DOCTOR, **extra) -> AuditRecord:
    return AuditRecord("read", 200, actor=actor, resource_type="Observation", resource_id=f"o{minutes}", version=1,
                       patients=[patient], recorded=T0 + timedelta(minutes=minutes), **extra)
