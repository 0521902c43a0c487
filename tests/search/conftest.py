"""Fixtures for the search engine tests: the registry (built once), a store on the real
embedded database, and `put()` to store resources the way the engine does (resource + `_index`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from fhir_server.definitions import load_definitions
from fhir_server.search import SearchRegistry, SearchService
from fhir_server.search.contained import record_containers
from fhir_server.storage import MongoStore

BASE = "http://127.0.0.1:8080/fhir"


@pytest.fixture(scope="session")
def registry() -> SearchRegistry:
    return SearchRegistry(load_definitions())


@pytest.fixture(scope="module")
def store(mongo_uri: str, database_name: str) -> Iterator[MongoStore]:
    store = MongoStore(mongo_uri, database_name)
    yield store
    store.drop_everything()
    store.close()


@pytest.fixture(scope="module")
def service(registry: SearchRegistry, store: MongoStore) -> SearchService:
    return SearchService(registry, store)


def stored_document(registry: SearchRegistry, resource: dict, version: int = 1) -> dict:
    last_updated = resource.get("meta", {}).get("lastUpdated")
    when = datetime.fromisoformat(last_updated.replace("Z", "+00:00")) if last_updated else datetime.now(UTC)
    return {"_id": resource["id"], "resource": resource, "_ver": version,
            "_lastUpdated": when.astimezone(UTC), "_index": registry.extract_index(resource)}


def put(store: MongoStore, registry: SearchRegistry, *resources: dict) -> None:
    """Store resources as a write does: the document, and its collection recorded as a container."""
    for resource in resources:
        store.insert(resource["resourceType"], stored_document(registry, resource))
        record_containers(store, resource["resourceType"], resource)


def ensure_indexes(store: MongoStore, registry: SearchRegistry, *types: str) -> None:
    specs = registry.index_specs()
    store.ensure_collections({t: specs[t] for t in types})


def ids(bundle: dict, mode: str = "match") -> list[str]:
    """`Type/id` of the entries of a searchset with this search mode, in order."""
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]
            if e["search"]["mode"] == mode]


def id_set(bundle: dict, mode: str = "match") -> set[str]:
    return {i.split("/", 1)[1] for i in ids(bundle, mode)}
