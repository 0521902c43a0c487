"""Profiles enforced on write: a create, update, patch or transaction entry that fails a profile it
claims, or the profile required for its type, is refused with 422 and the element at fault, and
nothing is stored."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.access.devissuer import system_claims
from fhir_server.config import Settings
from fhir_server.definitions import PROJECT_ROOT, load_definitions
from fhir_server.rest.app import create_app
from fhir_server.validation.operation import PDSM_DOCUMENT_REFERENCE
from tests.http.conftest import bearer, issue_expressions

EXAMPLES = PROJECT_ROOT / "examples"
INS = "urn:oid:1.2.250.1.213.1.4.8"


def _client(mongo_uri: str, settings: Settings, issuer_dir: Path, required: str | None) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FHIR_PUBLISH_CONFORMANCE", "off")          # not needed here: a faster start
        if required is None:
            env.delenv("FHIR_REQUIRED_PROFILES", raising=False)
        else:
            env.setenv("FHIR_REQUIRED_PROFILES", required)
        app = create_app(settings, mongo_uri)
        headers = bearer(issuer_dir, system_claims("system/*.cruds", "test-harness"))
        with TestClient(app, base_url="http://testserver", headers=headers) as test_client:
            yield test_client
            app.state.fhir.store.drop_everything()


@pytest.fixture(scope="module")
def client(mongo_uri: str, settings: Settings, issuer_dir: Path) -> Iterator[TestClient]:
    """The server with the default requirements."""
    yield from _client(mongo_uri, settings, issuer_dir, None)


@pytest.fixture(scope="module")
def configured(mongo_uri: str, settings: Settings, issuer_dir: Path) -> Iterator[TestClient]:
    """A server whose only requirement is INS patients (FHIR_REQUIRED_PROFILES)."""
    own = dataclasses.replace(settings, mongodb_db=settings.mongodb_db + "_configured")
    yield from _client(mongo_uri, own, issuer_dir,
                       "Patient=https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins")


# A TDE trace without the IHE BALP parts our AuditEvent profile requires (subtype, action, outcome...)
MINIMAL_TDE = {"resourceType": "AuditEvent",
               "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
               "recorded": "2026-11-21T09:00:00Z", "period": {"start": "2026-11-21T09:00:00Z"},
               "agent": [{"who": {"display": "SIH"}, "requestor": True}],
               "source": {"observer": {"display": "SIH"}}}


def example(name: str) -> dict:
    resource = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    resource.pop("id", None)
    return resource


def ins_patient(nir: str) -> dict:
    patient = example("patient-ins.json")
    patient["identifier"][0]["value"] = nir
    return patient


def matches(client: TestClient, query: str) -> int:
    return len(client.get(f"/fhir/{query}").json().get("entry", []))


def test_a_resource_meeting_its_profile_is_stored(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json=ins_patient("284037512345101"))
    assert response.status_code == 201, response.text


def test_a_resource_failing_its_profile_is_refused_and_not_stored(client: TestClient) -> None:
    patient = ins_patient("284037512345102")
    del patient["birthDate"]
    response = client.post("/fhir/Patient", json=patient)
    assert response.status_code == 422
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Patient.birthDate" in issue_expressions(outcome)
    assert all(i["severity"] in ("error", "warning") for i in outcome["issue"])
    assert matches(client, f"Patient?identifier={INS}|284037512345102") == 0


def test_an_update_that_breaks_the_profile_keeps_the_stored_version(client: TestClient) -> None:
    patient = {**ins_patient("284037512345103"), "id": "enforced-update"}
    assert client.put("/fhir/Patient/enforced-update", json=patient).status_code == 201
    broken = copy.deepcopy(patient)
    broken["gender"] = "other"
    response = client.put("/fhir/Patient/enforced-update", json=broken)
    assert response.status_code == 422
    assert "Patient.gender" in issue_expressions(response.json())
    stored = client.get("/fhir/Patient/enforced-update").json()
    assert stored["meta"]["versionId"] == "1" and stored["gender"] == "female"


def test_a_patch_that_breaks_the_profile_is_refused(client: TestClient) -> None:
    patient = {**ins_patient("284037512345104"), "id": "enforced-patch"}
    assert client.put("/fhir/Patient/enforced-patch", json=patient).status_code == 201
    remove = json.dumps([{"op": "remove", "path": "/birthDate"}])
    response = client.patch("/fhir/Patient/enforced-patch", content=remove,
                            headers={"Content-Type": "application/json-patch+json"})
    assert response.status_code == 422
    assert "Patient.birthDate" in issue_expressions(response.json())
    assert client.get("/fhir/Patient/enforced-patch").json()["meta"]["versionId"] == "1"


def test_a_profile_unknown_to_the_server_is_not_enforced(client: TestClient) -> None:
    patient = {"resourceType": "Patient", "meta": {"profile": ["https://example.org/StructureDefinition/inconnu"]},
               "name": [{"family": "Durand"}]}
    assert client.post("/fhir/Patient", json=patient).status_code == 201


def test_a_transaction_with_an_entry_failing_its_profile_stores_nothing(client: TestClient) -> None:
    immunization = example("immunization-dtcap.json")
    immunization["vaccineCode"] = {"text": "vaccin inconnu"}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b6b1e1a-1111-4c4c-8d8d-000000000001", "resource": ins_patient("284037512345105"),
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:0b6b1e1a-1111-4c4c-8d8d-000000000002", "resource": immunization,
         "request": {"method": "POST", "url": "Immunization"}}]}
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 422, response.text
    assert matches(client, f"Patient?identifier={INS}|284037512345105") == 0


def test_a_patient_summary_must_meet_the_vsm_profile_even_unclaimed(client: TestClient) -> None:
    composition = {"resourceType": "Composition", "status": "final",
                   "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5"}]},
                   "subject": {"reference": "Patient/enforced-update"}, "date": "2026-11-20",
                   "author": [{"reference": "Practitioner/x"}], "title": "SYNTHESE MEDICALE"}
    response = client.post("/fhir/Composition", json=composition)
    assert response.status_code == 422
    assert {"Composition.identifier", "Composition.section"} <= set(issue_expressions(response.json()))
    other = {**composition, "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]}}
    assert client.post("/fhir/Composition", json=other).status_code == 201


def test_a_fed_audit_event_must_meet_the_espace_audit_profile(client: TestClient) -> None:
    response = client.post("/fhir/AuditEvent", json=MINIMAL_TDE)
    assert response.status_code == 422
    assert {"AuditEvent.subtype", "AuditEvent.outcome"} <= set(issue_expressions(response.json()))
    fed = example("auditevent-creation-vaccination.json")
    assert client.post("/fhir/AuditEvent", json=fed).status_code == 201


def test_document_references_must_meet_pdsm_comprehensive(client: TestClient) -> None:
    assert PDSM_DOCUMENT_REFERENCE in load_definitions().structures        # the default requirement applies
    bare = {"resourceType": "DocumentReference", "status": "current",
            "subject": {"reference": "Patient/enforced-update"},
            "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/x"}}]}
    response = client.post("/fhir/DocumentReference", json=bare)
    assert response.status_code == 422
    assert {"DocumentReference.masterIdentifier", "DocumentReference.securityLabel"} <= set(
        issue_expressions(response.json()))
    assert matches(client, "DocumentReference?status=current") == 0


def test_configured_requirements_replace_the_defaults(configured: TestClient) -> None:
    response = configured.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Durand"}]})
    assert response.status_code == 422
    assert "Patient.identifier" in issue_expressions(response.json())
    assert configured.post("/fhir/Patient", json=ins_patient("284037512345106")).status_code == 201
    assert configured.post("/fhir/AuditEvent", json=MINIMAL_TDE).status_code == 201      # no default left


def test_a_misconfigured_requirement_stops_the_server(mongo_uri: str, settings: Settings) -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FHIR_REQUIRED_PROFILES", "Patiente=https://example.org/p")
        with pytest.raises(ValueError, match="Patiente is not a FHIR R4 resource type"):
            create_app(settings, mongo_uri)
