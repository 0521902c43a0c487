"""`$validate` over HTTP (type and instance level, `profile`, `mode`, Parameters body), always 200
with an OperationOutcome whose issues name the element at fault; and `$snapshot`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.access.devissuer import patient_claims
from fhir_server.config import Settings
from fhir_server.definitions import PROJECT_ROOT
from tests.http.conftest import bearer, issue_expressions, running_app

EXAMPLES = PROJECT_ROOT / "examples"
FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
ESPACE = "https://espace.example.org/fhir/StructureDefinition/"


@pytest.fixture(scope="module")
def client(mongo_uri: str, settings: Settings, issuer_dir: Path) -> Iterator[TestClient]:
    env = {"FHIR_REQUIRED_PROFILES": None, "FHIR_PUBLISH_CONFORMANCE": "on"}
    with running_app(mongo_uri, settings, issuer_dir, env) as test_client:
        yield test_client


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def errors(outcome: dict) -> list[dict]:
    return [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]


def validate(client: TestClient, path: str, body: dict | None = None, **params: str) -> dict:
    response = client.post(f"/fhir/{path}/$validate", json=body, params=params) if body is not None else \
        client.get(f"/fhir/{path}/$validate", params=params)
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return outcome


def test_a_valid_resource_is_all_ok(client: TestClient) -> None:
    outcome = validate(client, "Patient", example("patient-ins.json"))
    assert errors(outcome) == []
    assert outcome["issue"][0]["diagnostics"] == "All OK"


def test_the_claimed_profile_is_checked(client: TestClient) -> None:
    patient = example("patient-ins.json")
    del patient["birthDate"]
    outcome = validate(client, "Patient", patient)
    assert "Patient.birthDate" in issue_expressions(outcome)
    assert any("FR Core Patient INS" in i["diagnostics"] for i in errors(outcome))


def test_the_profile_parameter_in_the_url_or_in_parameters(client: TestClient) -> None:
    bare = {"resourceType": "Patient", "name": [{"family": "Durand", "given": ["Louis"]}]}
    assert errors(validate(client, "Patient", bare)) == []
    by_url = validate(client, "Patient", bare, profile=FR_CORE + "fr-core-patient-ins")
    assert "Patient.birthDate" in issue_expressions(by_url)
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": bare}, {"name": "profile", "valueCanonical": FR_CORE + "fr-core-patient-ins"}]}
    assert issue_expressions(validate(client, "Patient", parameters)) == issue_expressions(by_url)


def test_an_unknown_profile_is_an_error(client: TestClient) -> None:
    outcome = validate(client, "Patient", {"resourceType": "Patient"}, profile="https://example.org/inconnu")
    assert any("not known" in i["diagnostics"] for i in errors(outcome))


def test_structure_and_profile_issues_together_without_repeats(client: TestClient) -> None:
    consent = example("consent-restrictions.json")
    del consent["status"]
    consent["provision"]["couleur"] = "bleu"
    outcome = validate(client, "Consent", consent)
    expressions = issue_expressions(outcome)
    assert "Consent.provision.couleur" in expressions                   # from the JSON schema
    assert expressions.count("Consent.status") == 1                     # schema and profile agree: once


def test_a_resource_of_another_type_is_an_error(client: TestClient) -> None:
    outcome = validate(client, "Observation", example("patient-ins.json"))
    assert [e for issue in errors(outcome) for e in issue.get("expression", [])] == ["resourceType"]


def test_instance_level_validates_the_stored_resource(client: TestClient) -> None:
    stored = {"resourceType": "Patient", "id": "a-valider", "name": [{"family": "Durand"}]}
    assert client.put("/fhir/Patient/a-valider", json=stored).status_code == 201
    assert errors(validate(client, "Patient/a-valider")) == []
    outcome = validate(client, "Patient/a-valider", profile=FR_CORE + "fr-core-patient-ins")
    assert "Patient.identifier" in issue_expressions(outcome)
    missing = client.get("/fhir/Patient/absent/$validate")
    assert missing.status_code == 404


def test_mode_create_applies_the_required_profiles(client: TestClient) -> None:
    summary = {"resourceType": "Composition", "status": "final",
               "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5"}]}, "date": "2026-11-20",
               "author": [{"display": "Dr Bertrand"}], "title": "SYNTHESE MEDICALE"}
    assert errors(validate(client, "Composition", summary)) == []
    outcome = validate(client, "Composition", summary, mode="create")
    assert {"Composition.identifier", "Composition.custodian"} <= set(issue_expressions(outcome))


def test_mode_update_needs_the_id_of_the_url(client: TestClient) -> None:
    patient = {"resourceType": "Patient", "id": "autre", "name": [{"family": "Durand"}]}
    mismatch = validate(client, "Patient/a-valider", patient, mode="update")
    assert any("does not match" in i["diagnostics"] for i in errors(mismatch))
    del patient["id"]
    assert "Patient.id" in issue_expressions(validate(client, "Patient", patient, mode="update"))
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {**patient, "id": "a-valider"}}, {"name": "mode", "valueCode": "update"}]}
    assert errors(validate(client, "Patient/a-valider", parameters)) == []


def test_mode_delete_reports_what_would_refuse_it(client: TestClient) -> None:
    assert errors(validate(client, "Patient/a-valider", mode="delete")) == []
    created = client.post("/fhir/AuditEvent", json={k: v for k, v in example("auditevent-creation-vaccination.json")
                                                     .items() if k != "id"})
    assert created.status_code == 201, created.text
    event_id = created.json()["id"]
    outcome = validate(client, f"AuditEvent/{event_id}", mode="delete")
    assert any("immutable" in i["diagnostics"] for i in errors(outcome))
    assert client.get(f"/fhir/AuditEvent/{event_id}").status_code == 200       # a dry run: nothing changed


def test_invocations_that_cannot_be_understood_are_400(client: TestClient) -> None:
    empty = {"resourceType": "Parameters", "parameter": []}
    assert client.post("/fhir/Patient/$validate", json=empty).status_code == 400
    assert client.get("/fhir/Patient/$validate", params={"mode": "simulate"}).status_code == 400
    assert client.post("/fhir/Patient/$validate", params={"mode": "delete"}, json={"resourceType": "Patient"}) \
        .status_code == 400


# -- $snapshot -----------------------------------------------------------------------------------------
def test_snapshot_of_a_profile_by_url_and_by_id(client: TestClient) -> None:
    by_url = client.get("/fhir/StructureDefinition/$snapshot", params={"url": ESPACE + "espace-consent"})
    assert by_url.status_code == 200
    ids = [e["id"] for e in by_url.json()["snapshot"]["element"]]
    assert "Consent.provision.actor.reference" in ids and "Consent.identifier" in ids
    by_id = client.get("/fhir/StructureDefinition/espace-consent/$snapshot")
    assert by_id.status_code == 200 and by_id.json()["snapshot"] == by_url.json()["snapshot"]
    assert "snapshot" not in client.get("/fhir/StructureDefinition/espace-consent").json()     # served as authored


def test_snapshot_of_a_posted_differential(client: TestClient) -> None:
    profile = {"resourceType": "StructureDefinition", "url": "https://example.org/StructureDefinition/p",
               "name": "P", "status": "draft", "kind": "resource", "abstract": False, "type": "Patient",
               "baseDefinition": FR_CORE + "fr-core-patient", "derivation": "constraint",
               "differential": {"element": [{"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1}]}}
    response = client.post("/fhir/StructureDefinition/$snapshot", json={"resourceType": "Parameters", "parameter": [
        {"name": "definition", "resource": profile}]})
    assert response.status_code == 200
    birth = next(e for e in response.json()["snapshot"]["element"] if e["id"] == "Patient.birthDate")
    assert birth["min"] == 1
    widened = {**profile, "differential": {"element": [{"id": "Patient.gender", "path": "Patient.gender",
                                                        "max": "*"}]}}
    assert client.post("/fhir/StructureDefinition/$snapshot", json=widened).status_code == 422


def test_references_are_checked_only_as_far_as_the_caller_may_read(client: TestClient, issuer_dir: Path) -> None:
    mine = {"resourceType": "Patient", "id": "moi",
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "190017512345655"}]}
    other = {"resourceType": "Patient", "id": "autre", "name": [{"use": "official", "given": ["Sans nom"]}]}
    for patient in (mine, other):
        assert client.put(f"/fhir/Patient/{patient['id']}", json=patient).status_code == 201
    immunization = example("immunization-dtcap.json")
    immunization["patient"] = {"reference": "Patient/autre"}
    # instance level: authenticated, the trusted back-end sees why the reference does not conform
    as_system = validate(client, "Immunization/a-verifier", immunization)
    assert any("does not conform" in i["diagnostics"] for i in errors(as_system))
    as_patient = client.post("/fhir/Immunization/a-verifier/$validate", json=immunization,
                             headers=bearer(issuer_dir, patient_claims("190017512345655")))
    assert as_patient.status_code == 200
    assert not any("Patient/autre" in i["diagnostics"] for i in as_patient.json()["issue"])   # nothing leaks
    # type level needs no token: an anonymous caller learns nothing about stored resources
    anonymous = client.post("/fhir/Immunization/$validate", json=immunization, headers={"Authorization": ""})
    assert anonymous.status_code == 200
    assert not any("Patient/autre" in i["diagnostics"] for i in anonymous.json()["issue"])


def test_parameters_carry_resource_profile_and_mode_together(client: TestClient) -> None:
    bare = {"resourceType": "Patient", "name": [{"family": "Durand", "given": ["Louis"]}]}
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": bare},
        {"name": "profile", "valueUri": FR_CORE + "fr-core-patient-ins"},
        {"name": "mode", "valueCode": "create"}]}
    created = validate(client, "Patient", parameters)
    assert {"Patient.birthDate", "Patient.identifier"} <= set(issue_expressions(created))
    assert all(i["severity"] and i["code"] and i.get("expression") for i in errors(created))
    parameters["parameter"][2]["valueCode"] = "update"           # the mode is read: an update needs the id
    assert "Patient.id" in issue_expressions(validate(client, "Patient", parameters))


def test_mode_delete_needs_no_body_and_names_the_resources_still_referring(client: TestClient) -> None:
    patient = {"resourceType": "Patient", "id": "a-supprimer", "name": [{"family": "Moreau", "given": ["Jeanne"]}]}
    assert client.put("/fhir/Patient/a-supprimer", json=patient).status_code == 201
    alone = validate(client, "Patient/a-supprimer", mode="delete")
    assert [i["diagnostics"] for i in alone["issue"]] == ["All OK"]     # its audit trail does not count
    pressure = {"resourceType": "Observation", "id": "tension-jeanne", "status": "final",
                "code": {"text": "Tension artérielle"}, "subject": {"reference": "Patient/a-supprimer"}}
    assert client.put("/fhir/Observation/tension-jeanne", json=pressure).status_code == 201
    outcome = validate(client, "Patient/a-supprimer", mode="delete")
    assert errors(outcome) == []                                        # the delete would succeed...
    warnings = [i for i in outcome["issue"] if i["severity"] == "warning"]
    assert len(warnings) == 1 and "(Observation/tension-jeanne)" in warnings[0]["diagnostics"]   # ...dangling
    assert client.get("/fhir/Patient/a-supprimer").status_code == 200


def test_codes_of_systems_not_held_are_accepted_with_a_warning(client: TestClient) -> None:
    immunization = example("immunization-dtcap.json")
    immunization["site"] = {"coding": [{"system": "http://snomed.info/sct", "code": "368208006",
                                        "display": "Left upper arm structure"}]}
    outcome = validate(client, "Immunization", immunization)
    assert errors(outcome) == []
    assert any(i["severity"] == "warning" and i.get("expression") == ["Immunization.site"]
               for i in outcome["issue"])
