"""The conformance resources the server publishes at start: our profiles, extensions, value sets,
code systems, search parameters, the ImplementationGuide and the server's CapabilityStatement are
readable by id and searchable by url and version, and a restart leaves unchanged ones alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.config import Settings
from fhir_server.ig.publish import ConformancePublisher, published_resources
from fhir_server.validation.module import CAPABILITY_URL, publish_capability_statement
from tests.http.conftest import running_app

FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
ESPACE = "https://espace.example.org/fhir/"


@pytest.fixture(scope="module")
def client(mongo_uri: str, settings: Settings, issuer_dir: Path) -> Iterator[TestClient]:
    with running_app(mongo_uri, settings, issuer_dir, {"FHIR_PUBLISH_CONFORMANCE": "on"}) as test_client:
        yield test_client


def ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


@pytest.mark.parametrize(("query", "expected"), [
    ({"url": FR_CORE + "fr-core-patient-ins"}, ["fr-core-patient-ins"]),
    ({"url": FR_CORE + "fr-core-patient-ins", "version": "2.1.0"}, ["fr-core-patient-ins"]),
    ({"url": FR_CORE + "fr-core-patient-ins", "version": "2.2.0"}, []),
    ({"url": ESPACE + "StructureDefinition/espace-consent"}, ["espace-consent"]),
    ({"url": "https://interop.esante.gouv.fr/ig/fhir/tde/StructureDefinition/tde-auditevent"}, ["tde-auditevent"]),
])
def test_structure_definitions_are_searchable_by_url_and_version(client: TestClient, query: dict,
                                                                 expected: list[str]) -> None:
    response = client.get("/fhir/StructureDefinition", params=query)
    assert response.status_code == 200
    assert ids(response.json()) == expected


def test_profiles_are_readable_by_id_as_authored(client: TestClient) -> None:
    response = client.get("/fhir/StructureDefinition/fr-core-patient-ins")
    assert response.status_code == 200
    profile = response.json()
    assert profile["url"] == FR_CORE + "fr-core-patient-ins" and profile["version"] == "2.1.0"
    assert profile["differential"]["element"] and "snapshot" not in profile


def test_terminology_and_search_parameters_are_served(client: TestClient) -> None:
    value_sets = client.get("/fhir/ValueSet", params={"url": ESPACE + "ValueSet/document-class"}).json()
    assert ids(value_sets) == ["document-class"]
    code_system = client.get("/fhir/CodeSystem/TRE-A07-StatutVisibiliteDocument").json()
    assert {c["code"] for c in code_system["concept"]} >= {"MASQUE_PS", "INVISIBLE_PATIENT", "N"}
    search = client.get("/fhir/SearchParameter", params={
        "url": "https://interop.esante.gouv.fr/ig/fhir/tde/SearchParameter/TDE-AuditEvent-period-start"}).json()
    assert len(ids(search)) == 1
    extensions = client.get("/fhir/StructureDefinition", params={"type": "Extension", "_count": "200",
                                                                 "url:below": ESPACE}).json()
    assert {"audit-chain", "audit-agent-organization", "access-summary"} <= set(ids(extensions))


def test_the_implementation_guide_lists_what_is_served(client: TestClient) -> None:
    guide = client.get("/fhir/ImplementationGuide/espace").json()
    listed = {r["reference"]["reference"] for r in guide["definition"]["resource"]}
    assert {"StructureDefinition/espace-consent", "StructureDefinition/fr-core-patient-ins",
            "ValueSet/document-class", "CodeSystem/TRE-G15-ProfessionSante"} <= listed
    for reference in sorted(r for r in listed if r.startswith(("StructureDefinition/", "ValueSet/")))[:10]:
        assert client.get(f"/fhir/{reference}").status_code == 200, reference


def test_every_published_resource_is_stored_once_and_a_restart_changes_nothing(client: TestClient) -> None:
    server = client.app.state.fhir
    published = published_resources(server.definitions)
    for resource in published[::10]:
        stored = client.get(f"/fhir/{resource['resourceType']}/{resource['id']}")
        assert stored.status_code == 200 and stored.json()["meta"]["versionId"] == "1"
    assert ConformancePublisher(server)() == 0                          # a second start: nothing to write
    history = client.get("/fhir/StructureDefinition/espace-consent/_history").json()
    assert len(history["entry"]) == 1


def test_publication_can_be_turned_off(client: TestClient) -> None:
    server = client.app.state.fhir
    server.store.remove("ValueSet", "document-class", 1)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FHIR_PUBLISH_CONFORMANCE", "off")
        assert ConformancePublisher(server)() == 0
    assert client.get("/fhir/ValueSet/document-class").status_code == 404
    assert ConformancePublisher(server)() == 1
    assert client.get("/fhir/ValueSet/document-class").status_code == 200



@pytest.mark.parametrize(("resource_type", "url", "expected"), [
    ("ValueSet", ESPACE + "ValueSet/document-class", "document-class"),
    ("CodeSystem", ESPACE + "CodeSystem/document-class", "document-class"),
    ("ImplementationGuide", ESPACE + "ImplementationGuide/espace", "espace"),
    ("CapabilityStatement", CAPABILITY_URL, "espace"),
])
def test_every_kind_of_conformance_resource_is_searchable_by_url_and_version(
        client: TestClient, resource_type: str, url: str, expected: str) -> None:
    stored = client.get(f"/fhir/{resource_type}/{expected}").json()
    assert stored["url"] == url and stored.get("version")
    assert ids(client.get(f"/fhir/{resource_type}", params={"url": url}).json()) == [expected]
    by_version = client.get(f"/fhir/{resource_type}", params={"url": url, "version": stored["version"]}).json()
    assert ids(by_version) == [expected]
    other = client.get(f"/fhir/{resource_type}", params={"url": url, "version": "0.0.0-absente"}).json()
    assert ids(other) == []


def test_the_capability_statement_is_stored_and_searchable(client: TestClient) -> None:
    metadata = client.get("/fhir/metadata").json()
    assert metadata["url"] == CAPABILITY_URL and metadata["version"]
    found = client.get("/fhir/CapabilityStatement", params={"url": CAPABILITY_URL,
                                                             "version": metadata["version"]}).json()
    assert ids(found) == ["espace"]
    stored = found["entry"][0]["resource"]
    assert [r["type"] for r in stored["rest"][0]["resource"]] == [r["type"] for r in metadata["rest"][0]["resource"]]
    assert publish_capability_statement(client.app.state.fhir) is False           # unchanged: left alone
    assert client.get("/fhir/CapabilityStatement/espace").json()["meta"]["versionId"] == "1"
