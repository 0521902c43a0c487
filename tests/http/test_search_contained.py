"""`_contained` through the HTTP API: contained resources are found once their container is written
(the write records the container), and each caller sees exactly the contained resources of the
containers they may see: the access filter applies to the containers, in results and totals."""

from __future__ import annotations

import pytest

from fhir_server.access.devissuer import patient_claims, practitioner_claims
from tests.http.conftest import bearer

INS = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "https://rpps.esante.gouv.fr"
VISIBILITY = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
INS_A, INS_B = "284037512345640", "190017512345678"
DOCTOR = "10000000001"
SYSTOLIC = "http://loinc.org|8480-6"
SEARCH = f"/fhir/Observation?_contained=true&code={SYSTOLIC}&_total=accurate"


def report(report_id: str, patient: str, *, masked: bool = False) -> dict:
    """A DiagnosticReport whose blood pressure is contained (`#bp`)."""
    resource = {
        "resourceType": "DiagnosticReport", "id": report_id, "status": "final", "code": {"text": "Consultation"},
        "subject": {"reference": f"Patient/{patient}"}, "result": [{"reference": "#bp"}],
        "contained": [{"resourceType": "Observation", "id": "bp", "status": "final",
                       "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                       "valueQuantity": {"value": 128, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                                         "code": "mm[Hg]"}}],
    }
    if masked:
        resource["meta"] = {"security": [{"system": VISIBILITY, "code": "MASQUE_PS"}]}
    return resource


@pytest.fixture(scope="module")
def world(client):
    resources = [
        {"resourceType": "Patient", "id": "pat-a", "identifier": [{"system": INS, "value": INS_A}]},
        {"resourceType": "Patient", "id": "pat-b", "identifier": [{"system": INS, "value": INS_B}]},
        {"resourceType": "Practitioner", "id": "ps-doctor", "identifier": [{"system": RPPS, "value": DOCTOR}]},
        report("ra", "pat-a"),
        report("ra-masked", "pat-a", masked=True),
        report("rb", "pat-b"),
    ]
    for resource in resources:
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code in (200, 201), response.text
    return resources


def found(client, headers: dict | None, url: str = SEARCH) -> tuple[list[str], int]:
    response = client.get(url, headers=headers or {})
    assert response.status_code == 200, response.text
    bundle = response.json()
    urls = [e["fullUrl"].split("/fhir/", 1)[1] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
    return sorted(urls), bundle["total"]


def test_the_trusted_back_end_sees_every_contained_observation(client, world):
    assert found(client, None) == (["DiagnosticReport/ra#bp", "DiagnosticReport/ra-masked#bp",
                                    "DiagnosticReport/rb#bp"], 3)


def test_a_patient_sees_the_contained_resources_of_their_own_record_only(client, world, issuer_dir):
    assert found(client, bearer(issuer_dir, patient_claims(INS_A))) == (
        ["DiagnosticReport/ra#bp", "DiagnosticReport/ra-masked#bp"], 2)
    assert found(client, bearer(issuer_dir, patient_claims(INS_B))) == (["DiagnosticReport/rb#bp"], 1)


def test_a_container_masked_from_professionals_hides_what_it_contains(client, world, issuer_dir):
    doctor = bearer(issuer_dir, practitioner_claims(DOCTOR, "10"))
    assert found(client, doctor) == (["DiagnosticReport/ra#bp", "DiagnosticReport/rb#bp"], 2)
    containers = f"/fhir/Observation?_contained=both&_containedType=container&code={SYSTOLIC}&_total=accurate"
    assert found(client, doctor, containers) == (["DiagnosticReport/ra", "DiagnosticReport/rb"], 2)
    assert client.get("/fhir/DiagnosticReport/ra-masked", headers=doctor).status_code == 404


def test_the_contained_resource_is_the_entry(client, world, issuer_dir):
    bundle = client.get(SEARCH, headers=bearer(issuer_dir, patient_claims(INS_B))).json()
    (entry,) = bundle["entry"]
    assert entry["resource"]["resourceType"] == "Observation" and entry["resource"]["id"] == "bp"
    assert entry["fullUrl"] == "http://testserver/fhir/DiagnosticReport/rb#bp"


def test_the_capability_statement_says_contained_searches_are_supported(client):
    statement = client.get("/fhir/metadata").json()
    documented = {p["name"]: p for p in statement["rest"][0]["searchParam"]}
    assert {"_contained", "_containedType"} <= set(documented)
    assert "whoever may see their container" in documented["_contained"]["documentation"]
