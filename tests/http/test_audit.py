"""Every interaction on patient data leaves exactly the expected AuditEvents; the trail is
immutable, private and tamper-evident; the patient reads their access history."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from fhir_server.access.devissuer import patient_claims, practitioner_claims
from fhir_server.audit import verify_main
from tests.documents import pdsm_document
from tests.http.conftest import bearer

INS = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "https://rpps.esante.gouv.fr"
INS_A, INS_B = "180057512345678", "291127512345690"
DOCTOR, NURSE, PHYSIO = "10000000011", "10000000012", "10000000013"
VISIBILITY = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def events(client, patient: str, since: str = "2000-01-01", by: str | None = None) -> list[dict]:
    """The AuditEvents of a patient recorded since `since` (by one requestor), newest first,
    read as the back-end system (whose own searches are audited under its client id)."""
    bundle = client.get("/fhir/AuditEvent", params={"patient": patient, "date": f"ge{since}", "_count": "500",
                                                    "_sort": "-_lastUpdated"}).json()
    found = [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
    return [e for e in found if by is None or who(e) == by]


def subtype(event: dict) -> str:
    return event["subtype"][0]["code"]


def who(event: dict) -> str | None:
    requestor = next((a for a in event["agent"] if a.get("requestor")), None)
    return ((requestor or {}).get("who") or {}).get("identifier", {}).get("value")


@pytest.fixture(scope="module")
def record(client):
    for pid, ins in (("aud-a", INS_A), ("aud-b", INS_B)):
        client.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid,
                                                 "identifier": [{"system": INS, "value": ins}]})
    for doc_id, patient, label in (("aud-doc-a", "aud-a", None), ("aud-doc-b", "aud-b", None),
                                   ("aud-masked", "aud-a", "MASQUE_PS")):
        document = pdsm_document(doc_id, patient, "Practitioner/aud-author", label=label,
                                 title=f"Compte rendu {doc_id}")
        assert client.put(f"/fhir/DocumentReference/{doc_id}", json=document).status_code in (200, 201)


def practitioner(issuer_dir, rpps: str, profession: str, **extra) -> dict:
    return bearer(issuer_dir, practitioner_claims(rpps, profession, **extra))


def test_read_by_professional_is_audited(client, record, issuer_dir):
    since = now()
    response = client.get("/fhir/DocumentReference/aud-doc-a", headers=practitioner(issuer_dir, DOCTOR, "10"))
    assert response.status_code == 200
    reads = events(client, "Patient/aud-a", since, DOCTOR)
    assert len(reads) == 1
    event = reads[0]
    assert event["action"] == "R" and event["outcome"] == "0"
    assert who(event) == DOCTOR
    entities = {(e["what"].get("reference"), e["type"]["code"]) for e in event["entity"] if "what" in e}
    assert ("Patient/aud-a", "1") in entities
    assert any(ref and ref.startswith("DocumentReference/aud-doc-a") for ref, _ in entities)


def test_search_over_two_patients_gives_one_event_per_patient(client, record, issuer_dir):
    doctor = practitioner(issuer_dir, DOCTOR, "10")
    since = now()
    client.get("/fhir/DocumentReference", params={"patient": "aud-a,aud-b", "status": "current"}, headers=doctor)
    searches_a = events(client, "Patient/aud-a", since, DOCTOR)
    searches_b = events(client, "Patient/aud-b", since, DOCTOR)
    assert [subtype(e) for e in searches_a + searches_b] == ["search-type", "search-type"]
    assert len(searches_a) == 1 and len(searches_b) == 1
    assert searches_a[0]["action"] == "E"
    query = [e for e in searches_a[0]["entity"] if e.get("query")]
    assert len(query) == 1
    refs_a = {e["what"]["reference"] for e in searches_a[0]["entity"] if "what" in e}
    assert not any("aud-doc-b" in r for r in refs_a)          # B's document is not in A's trail


def test_write_is_audited_in_its_transaction(client, record):
    since = now()
    created = client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final",
                                                      "code": {"text": "tension"},
                                                      "subject": {"reference": "Patient/aud-a"}})
    assert created.status_code == 201
    new = events(client, "Patient/aud-a", since, "test-harness")
    assert [e["action"] for e in new if subtype(e) == "create"] == ["C"]


def test_refusals_are_audited(client, record, issuer_dir):
    since = now()
    response = client.get("/fhir/DocumentReference/aud-masked", headers=practitioner(issuer_dir, NURSE, "60"))
    assert response.status_code == 404
    denied = events(client, "Patient/aud-a", since, NURSE)
    assert len(denied) == 1
    assert denied[0]["type"]["code"] == "110113"                  # security alert: access denied by consent
    assert who(denied[0]) == NURSE
    unauthenticated = client.get("/fhir/Patient/aud-a", headers={"Authorization": ""})
    assert unauthenticated.status_code == 401
    wide = client.get("/fhir/AuditEvent", params={"date": "ge2000-01-01", "outcome": "4", "_count": "100"}).json()
    assert any(e["resource"]["subtype"][0]["code"] == "read" and not who(e["resource"])
               for e in wide.get("entry", []) if e["search"]["mode"] == "match")


def test_emergency_access_is_a_security_alert(client, record, issuer_dir):
    since = now()
    emergency = practitioner(issuer_dir, PHYSIO, "70", purpose_of_use="ETREAT")
    assert client.get("/fhir/DocumentReference/aud-doc-b", headers=emergency).status_code == 200
    alert = [e for e in events(client, "Patient/aud-b", since, PHYSIO) if e["type"]["code"] == "110113"]
    assert len(alert) == 1
    purposes = [c["code"] for a in alert[0]["agent"] for p in a.get("purposeOfUse", []) for c in p["coding"]]
    assert "ETREAT" in purposes


def test_audit_events_are_immutable_and_private(client, record, issuer_dir):
    event = events(client, "Patient/aud-a")[0]
    assert client.put(f"/fhir/AuditEvent/{event['id']}", json=event).status_code == 405
    assert client.delete(f"/fhir/AuditEvent/{event['id']}").status_code == 405
    patch = [{"op": "replace", "path": "/outcome", "value": "8"}]
    assert client.patch(f"/fhir/AuditEvent/{event['id']}", json=patch,
                        headers={"Content-Type": "application/json-patch+json"}).status_code == 405
    doctor = practitioner(issuer_dir, DOCTOR, "10")
    assert client.get(f"/fhir/AuditEvent/{event['id']}", headers=doctor).status_code == 404
    bundle = client.get("/fhir/AuditEvent", params={"patient": "Patient/aud-a"}, headers=doctor).json()
    assert [e for e in bundle.get("entry", []) if e["search"]["mode"] == "match"] == []
    patient = bearer(issuer_dir, patient_claims(INS_A))
    assert client.get(f"/fhir/AuditEvent/{event['id']}", headers=patient).status_code == 200


def test_wide_audit_search_needs_a_date(client, record):
    response = client.get("/fhir/AuditEvent", params={"action": "R"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["date"]


def test_access_history(client, record, issuer_dir):
    for rpps, profession in ((DOCTOR, "10"), (NURSE, "60")):
        client.get("/fhir/DocumentReference/aud-doc-a", headers=practitioner(issuer_dir, rpps, profession))
    patient = bearer(issuer_dir, patient_claims(INS_A))
    client.get("/fhir/DocumentReference/aud-doc-a", headers=patient)
    history = client.get("/fhir/Patient/aud-a/$access-history", params={"exclude-self": "true", "_count": "50"},
                         headers=patient)
    assert history.status_code == 200
    people = [who(e["resource"]) for e in history.json()["entry"]]
    assert DOCTOR in people and NURSE in people
    assert INS_A not in people
    assert client.get("/fhir/Patient/aud-a/$access-history",
                      headers=practitioner(issuer_dir, DOCTOR, "10")).status_code == 403


def test_access_history_invoked_by_post(client, record, issuer_dir):
    """The same answer from a Parameters body as from the URL, and the body's `_count` pages it."""
    patient = bearer(issuer_dir, patient_claims(INS_A))
    client.get("/fhir/DocumentReference/aud-doc-a", headers=practitioner(issuer_dir, DOCTOR, "10"))
    by_get = client.get("/fhir/Patient/aud-a/$access-history", params={"exclude-self": "true", "_count": "50"},
                        headers=patient).json()
    body = {"resourceType": "Parameters", "parameter": [{"name": "exclude-self", "valueBoolean": True},
                                                        {"name": "_count", "valueInteger": 50}]}
    by_post = client.post("/fhir/Patient/aud-a/$access-history", json=body, headers=patient)
    assert by_post.status_code == 200, by_post.text
    # what the GET found is found again (events recorded in between, by others, may come on top)
    assert {e["resource"]["id"] for e in by_get["entry"]} <= {e["resource"]["id"] for e in by_post.json()["entry"]}
    assert INS_A not in [who(e["resource"]) for e in by_post.json()["entry"]]
    paged = client.post("/fhir/Patient/aud-a/$access-history", headers=patient, json={
        "resourceType": "Parameters", "parameter": [{"name": "_count", "valueInteger": 1}]}).json()
    assert len(paged["entry"]) == 1 and any(link["relation"] == "next" for link in paged["link"])


def test_tampering_is_detected(client, record):
    store = client.app.state.fhir.store
    out = io.StringIO()
    assert verify_main(["--patient", "Patient/aud-a"], store=store, out=out) == 0
    victim = events(client, "Patient/aud-a")[3]
    store.db["AuditEvent"].update_one({"_id": victim["id"]}, {"$set": {"resource.outcome": "0", "resource.recorded":
                                                                      "2020-01-01T00:00:00Z"}})
    out = io.StringIO()
    assert verify_main(["--patient", "Patient/aud-a"], store=store, out=out) == 1
    assert victim["id"] in out.getvalue()


def test_audit_verify_command(client, record, mongo_uri, settings):
    env = {**os.environ, "FHIR_MONGODB_URI": mongo_uri, "FHIR_MONGODB_DB": settings.mongodb_db}
    result = subprocess.run([sys.executable, "-m", "fhir_server.cli", "audit", "verify", "--patient", "Patient/aud-b"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_refused_read_outside_any_resource_type_is_a_plain_404(client) -> None:
    """`/.well-known/smart-configuration` (the first request of a SMART client) and typos name no
    collection: the refusal is audited without looking for a resource, and answers 404."""
    for path in ("/fhir/.well-known/smart-configuration", "/fhir/NoSuchType/x"):
        response = client.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
