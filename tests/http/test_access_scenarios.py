"""Who sees what: a scenario with several patients, professionals of different professions,
blocked and authorised professionals, masked and invisible documents, an opposed patient and
emergency access. Each rule is asserted both ways (what must be visible is visible)."""

from __future__ import annotations

import pytest

from fhir_server.access.devissuer import patient_claims, practitioner_claims
from tests.documents import pdsm_document
from tests.http.conftest import bearer

INS = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "https://rpps.esante.gouv.fr"
CLASS = "https://espace.example.org/fhir/CodeSystem/document-class"
VISIBILITY = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"

INS_A, INS_B, INS_C = "284037512345640", "190017512345678", "275127512345611"
DOCTOR, PHYSIO, BLOCKED, AUTHORISED = "10000000001", "10000000002", "10000000003", "10000000004"


def document(doc_id: str, patient: str, author: str, *, klass: str | None = None, label: str | None = None) -> dict:
    return pdsm_document(doc_id, patient, f"Practitioner/{author}", klass=klass, label=label)


def consent(consent_id: str, patient: str, provision: dict) -> dict:
    return {
        "resourceType": "Consent", "id": consent_id, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "provision": provision,
    }


def actor_provision(kind: str, rpps: str) -> dict:
    return {"type": kind, "actor": [{"role": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
        "reference": {"identifier": {"system": RPPS, "value": rpps}}}]}


@pytest.fixture(scope="module")
def world(client):
    """Load the scenario as the trusted back-end (system token)."""
    resources = [
        {"resourceType": "Patient", "id": "pat-a", "identifier": [{"system": INS, "value": INS_A}]},
        {"resourceType": "Patient", "id": "pat-b", "identifier": [{"system": INS, "value": INS_B}]},
        {"resourceType": "Patient", "id": "pat-c", "identifier": [{"system": INS, "value": INS_C}]},
        *[{"resourceType": "Practitioner", "id": f"ps-{rpps}", "identifier": [{"system": RPPS, "value": rpps}]}
          for rpps in (DOCTOR, PHYSIO, BLOCKED, AUTHORISED)],
        document("a-consult", "pat-a", f"ps-{DOCTOR}"),
        document("a-psy", "pat-a", f"ps-{DOCTOR}", klass="psychiatrie"),
        document("a-masked", "pat-a", f"ps-{AUTHORISED}", label="MASQUE_PS"),
        document("a-invisible", "pat-a", f"ps-{DOCTOR}", label="INVISIBLE_PATIENT"),
        document("a-consent-masked", "pat-a", f"ps-{BLOCKED}"),
        document("a-psy-by-physio", "pat-a", f"ps-{PHYSIO}", klass="psychiatrie"),
        document("b-consult", "pat-b", f"ps-{AUTHORISED}"),
        document("c-consult", "pat-c", f"ps-{DOCTOR}"),
        document("c-psy", "pat-c", f"ps-{DOCTOR}", klass="psychiatrie"),
        consent("consent-a", "pat-a", {"type": "permit", "provision": [
            actor_provision("deny", BLOCKED),
            actor_provision("permit", AUTHORISED),
            {"type": "deny", "data": [{"meaning": "instance",
                                       "reference": {"reference": "DocumentReference/a-consent-masked"}}]},
        ]}),
        consent("consent-b", "pat-b", {"type": "deny"}),
        consent("consent-c", "pat-c", {"type": "permit", "provision": [{
            "type": "deny", "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                         "code": "ETREAT"}]}]}),
    ]
    for resource in resources:
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code in (200, 201), response.text
    return resources


def practitioner(issuer_dir, rpps: str, profession: str = "10", purpose: str | None = None) -> dict:
    return bearer(issuer_dir, practitioner_claims(rpps, profession, purpose_of_use=purpose))


def visible(client, headers, ids: list[str]) -> set[str]:
    return {i for i in ids if client.get(f"/fhir/DocumentReference/{i}", headers=headers).status_code == 200}


ALL_A = ["a-consult", "a-psy", "a-masked", "a-invisible", "a-consent-masked", "a-psy-by-physio"]


def test_doctor_sees_all_but_masked(client, world, issuer_dir):
    seen = visible(client, practitioner(issuer_dir, DOCTOR), ALL_A)
    assert seen == {"a-consult", "a-psy", "a-invisible", "a-psy-by-physio"}


def test_masked_document_is_404_not_403(client, world, issuer_dir):
    response = client.get("/fhir/DocumentReference/a-masked", headers=practitioner(issuer_dir, DOCTOR))
    assert response.status_code == 404


def test_physiotherapist_and_the_matrix(client, world, issuer_dir):
    seen = visible(client, practitioner(issuer_dir, PHYSIO, "70"), ALL_A)
    assert seen == {"a-consult", "a-invisible", "a-psy-by-physio"}      # author privilege on its own psy doc


def test_blocked_professional_sees_nothing_of_that_patient(client, world, issuer_dir):
    headers = practitioner(issuer_dir, BLOCKED)
    assert visible(client, headers, ALL_A) == {"a-consent-masked"}          # only what it authored
    assert visible(client, headers, ["c-consult"]) == {"c-consult"}
    assert client.get("/fhir/Patient/pat-a", headers=headers).status_code == 404


def test_authorised_professional_sees_masked(client, world, issuer_dir):
    seen = visible(client, practitioner(issuer_dir, AUTHORISED), ALL_A)
    assert seen == set(ALL_A)


def test_patient_sees_own_record_except_invisible(client, world, issuer_dir):
    headers = bearer(issuer_dir, patient_claims(INS_A))
    assert visible(client, headers, ALL_A) == set(ALL_A) - {"a-invisible"}
    assert visible(client, headers, ["c-consult", "b-consult"]) == set()
    assert client.get("/fhir/Patient/pat-a", headers=headers).status_code == 200
    assert client.get("/fhir/Patient/pat-c", headers=headers).status_code == 404
    assert client.get(f"/fhir/Practitioner/ps-{DOCTOR}", headers=headers).status_code == 200


def test_opposed_patient(client, world, issuer_dir):
    doctor = practitioner(issuer_dir, DOCTOR)
    assert visible(client, doctor, ["b-consult"]) == set()
    new_document = document("x", "pat-b", f"ps-{DOCTOR}")
    del new_document["id"]
    response = client.post("/fhir/DocumentReference", json=new_document, headers=doctor)
    assert response.status_code == 403
    assert "opposed" in response.json()["issue"][0]["diagnostics"]
    patient_b = bearer(issuer_dir, patient_claims(INS_B))
    assert visible(client, patient_b, ["b-consult"]) == {"b-consult"}


def test_emergency_access(client, world, issuer_dir):
    emergency_physio = practitioner(issuer_dir, PHYSIO, "70", purpose="ETREAT")
    assert visible(client, emergency_physio, ["a-psy"]) == {"a-psy"}            # despite the matrix
    assert visible(client, emergency_physio, ["a-masked"]) == set()            # never despite a mask
    assert visible(client, emergency_physio, ["c-psy"]) == set()               # patient C refuses emergency
    assert visible(client, emergency_physio, ["b-consult"]) == set()           # never despite an opposition


def test_search_totals_and_pages_obey_the_decision(client, world, issuer_dir):
    physio = practitioner(issuer_dir, PHYSIO, "70")
    params = {"patient": "pat-a", "status": "current", "_total": "accurate", "_count": "1"}
    bundle = client.get("/fhir/DocumentReference", params=params, headers=physio).json()
    assert bundle["total"] == 3
    seen = []
    while True:
        seen += [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            break
        bundle = client.get(nxt[0].replace("http://testserver", ""), headers=physio).json()
    assert sorted(seen) == ["a-consult", "a-invisible", "a-psy-by-physio"]


def test_include_and_revinclude_obey_the_decision(client, world, issuer_dir):
    blocked = practitioner(issuer_dir, BLOCKED)
    params = {"patient": "pat-a", "status": "current", "_id": "a-consent-masked",
              "_include": "DocumentReference:subject"}
    bundle = client.get("/fhir/DocumentReference", params=params, headers=blocked).json()
    ids = {e["resource"]["id"] for e in bundle.get("entry", [])}
    assert ids == {"a-consent-masked"}                                          # the blocked patient is not included
    physio = practitioner(issuer_dir, PHYSIO, "70")
    bundle = client.get("/fhir/Patient", params={"_id": "pat-a", "_revinclude": "DocumentReference:subject"},
                        headers=physio).json()
    ids = {e["resource"]["id"] for e in bundle.get("entry", [])}
    assert ids == {"pat-a", "a-consult", "a-invisible", "a-psy-by-physio"}


def test_history_and_vread_obey_the_decision(client, world, issuer_dir):
    doctor = practitioner(issuer_dir, DOCTOR)
    assert client.get("/fhir/DocumentReference/a-masked/_history/1", headers=doctor).status_code == 404
    assert client.get("/fhir/DocumentReference/a-masked/_history", headers=doctor).status_code == 404
    history = client.get("/fhir/DocumentReference/_history", headers=doctor).json()
    ids = {e["resource"]["id"] for e in history.get("entry", []) if "resource" in e}
    assert "a-masked" not in ids and "b-consult" not in ids and "a-consult" in ids


def test_chain_and_has_obey_the_decision(client, world, issuer_dir):
    blocked = practitioner(issuer_dir, BLOCKED)
    bundle = client.get("/fhir/DocumentReference", params={"patient.identifier": f"{INS}|{INS_A}", "status": "current"},
                        headers=blocked).json()
    assert {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"} == set()
    bundle = client.get("/fhir/Patient", params={"_has:DocumentReference:subject:_id": "a-masked"},
                        headers=practitioner(issuer_dir, DOCTOR)).json()
    assert [e for e in bundle.get("entry", []) if e["search"]["mode"] == "match"] == []


def test_compartment_and_everything_obey_the_decision(client, world, issuer_dir):
    physio = practitioner(issuer_dir, PHYSIO, "70")
    bundle = client.get("/fhir/Patient/pat-a/DocumentReference", headers=physio).json()
    assert {e["resource"]["id"] for e in bundle.get("entry", [])} == {"a-consult", "a-invisible", "a-psy-by-physio"}
    everything = client.get("/fhir/Patient/pat-a/$everything", headers=physio).json()
    ids = {e["resource"]["id"] for e in everything.get("entry", [])}
    assert "a-psy" not in ids and "a-masked" not in ids and "a-consult" in ids


def test_transaction_reads_obey_the_decision(client, world, issuer_dir):
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "DocumentReference/a-masked"}},
        {"request": {"method": "GET", "url": "DocumentReference?patient=pat-a&status=current"}},
    ]}
    result = client.post("/fhir", json=bundle, headers=practitioner(issuer_dir, DOCTOR)).json()
    assert result["entry"][0]["response"]["status"].startswith("404")
    ids = {e["resource"]["id"] for e in result["entry"][1]["resource"].get("entry", [])}
    assert "a-masked" not in ids and "a-consult" in ids


def test_consent_change_takes_effect_on_next_request(client, world, issuer_dir):
    doctor = practitioner(issuer_dir, DOCTOR)
    assert visible(client, doctor, ["c-consult"]) == {"c-consult"}
    block = consent("consent-c-block", "pat-c", {"type": "permit", "provision": [actor_provision("deny", DOCTOR)]})
    assert client.put("/fhir/Consent/consent-c-block", json=block).status_code == 201
    assert visible(client, doctor, ["c-consult"]) == {"c-consult"}              # author privilege still applies
    assert client.get("/fhir/Patient/pat-c", headers=doctor).status_code == 404
    assert client.delete("/fhir/Consent/consent-c-block").status_code == 200
    assert client.get("/fhir/Patient/pat-c", headers=doctor).status_code == 200


def test_patient_cannot_write_to_another_record(client, world, issuer_dir):
    headers = bearer(issuer_dir, patient_claims(INS_A))
    weight = {"resourceType": "Observation", "status": "final", "code": {"text": "Poids (automesure)"},
              "subject": {"reference": "Patient/pat-a"}, "valueQuantity": {"value": 61.5, "unit": "kg"}}
    assert client.post("/fhir/Observation", json=weight, headers=headers).status_code == 201
    other = {**weight, "subject": {"reference": "Patient/pat-c"}}
    assert client.post("/fhir/Observation", json=other, headers=headers).status_code == 403


def test_conditional_operations_do_not_reveal_hidden_resources(client, world, issuer_dir):
    blocked = practitioner(issuer_dir, BLOCKED)
    response = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={
        **blocked, "If-None-Exist": f"identifier={INS}|{INS_A}"})
    assert response.status_code == 201                          # pat-a is not matched, nor returned
    assert response.json()["id"] != "pat-a"
    patch = client.patch("/fhir/DocumentReference?_id=a-masked", json=[{"op": "add", "path": "/description",
                                                                         "value": "x"}],
                         headers={**practitioner(issuer_dir, DOCTOR), "Content-Type": "application/json-patch+json"})
    assert patch.status_code == 404
