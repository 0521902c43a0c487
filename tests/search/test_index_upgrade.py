"""A database written with an older `_index` layout is upgraded once, at start: the resources the
new layout changes are re-indexed, and their searches then find them through the new fields."""

from __future__ import annotations

import pytest

from fhir_server.search import SearchRegistry, SearchService
from fhir_server.search.service import INDEX_LAYOUT_KEY, INDEX_LAYOUT_VERSION
from tests.search.conftest import BASE, id_set, stored_document

TAGGED = {"resourceType": "Patient", "id": "tagged", "name": [{"family": "Durand"}],
          "meta": {"tag": [{"system": "http://espace.example/tags", "code": "vip"}]}}
PLAIN = {"resourceType": "Patient", "id": "plain", "name": [{"family": "Martin"}]}
PROFILED = {"resourceType": "DocumentReference", "id": "d1", "status": "current",
            "meta": {"profile": ["http://example.org/StructureDefinition/doc"]},
            "content": [{"attachment": {"url": "Binary/1"}}]}


def written_with_layout(registry: SearchRegistry, resource: dict, version: int) -> dict:
    """The document as a server of that layout version stored it."""
    document = stored_document(registry, resource)
    document["_index"].pop("_meta", None)                       # layout 3
    if version < 2:
        document["_index"] = {k: v for k, v in document["_index"].items() if not k.endswith(":prefix")}
    return document


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_layout_is_upgraded_once(store, registry: SearchRegistry, version: int) -> None:
    store.drop_everything()
    for resource in (TAGGED, PLAIN, PROFILED):
        store.insert(resource["resourceType"], written_with_layout(registry, resource, version))
    store.put_meta(INDEX_LAYOUT_KEY, {"version": version})
    service = SearchService(registry, store)
    assert id_set(service.search("Patient", [("_tag", "vip")], base_url=BASE)) == set()

    changed = service.upgrade_index_layout()

    assert changed == (3 if version < 2 else 2)                 # layout 1: every Patient gets its prefixes
    assert store.get_meta(INDEX_LAYOUT_KEY)["version"] == INDEX_LAYOUT_VERSION
    for resource in (TAGGED, PLAIN, PROFILED):
        stored = store.get(resource["resourceType"], resource["id"])
        assert stored["_index"] == registry.extract_index(resource)
    assert id_set(service.search("Patient", [("_tag", "vip")], base_url=BASE)) == {"tagged"}
    assert id_set(service.search("DocumentReference", [("_profile:below", "http://example.org/")],
                                 base_url=BASE)) == {"d1"}
    assert service.upgrade_index_layout() == 0                  # once
