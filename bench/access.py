"""Cost of the access decision: `DocumentReference?patient=...` as a professional under a
patient with 5 Consents, as the patient, and with access control out of the way (a back-end
system token, no filter), in the same run against the same data. Other patients' documents
fill the collection around the measured record, so a query that left the index for a
collection scan would show here."""

from __future__ import annotations

import uuid

import httpx
import pymongo

from bench.auth import BenchIssuer
from bench.harness import HEADER, Figures, database, run_concurrently, server
from fhir_server.access import devissuer
from tests.documents import pdsm_document

INS = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "https://rpps.esante.gouv.fr"
PATIENT_INS = "284037512345640"
DOCTOR = "10000000001"
QUERY = {"patient": "bench-patient", "status": "current"}


def _consent(i: int, provision: dict) -> dict:
    return {"resourceType": "Consent", "id": f"consent-{i}", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/bench-patient"}, "provision": provision}


def _actor(kind: str, rpps: str) -> dict:
    return {"type": kind, "actor": [{"role": {"coding": [{"code": "IRCP"}]},
                                     "reference": {"identifier": {"system": RPPS, "value": rpps}}}]}


def load_population(client: httpx.Client, documents: int, patients: int = 100) -> None:
    """Documents of other patients, written as one batch per patient."""
    per_patient = max(1, documents // patients)
    for p in range(patients):
        entries = [{"resource": pdsm_document(f"other-{p}-{i}", f"other-{p}", "Practitioner/ps-author"),
                    "request": {"method": "PUT", "url": f"DocumentReference/other-{p}-{i}"}}
                   for i in range(per_patient)]
        client.post("/", json={"resourceType": "Bundle", "type": "batch", "entry": entries}).raise_for_status()


def load(client: httpx.Client, documents: int) -> None:
    client.put("/Patient/bench-patient", json={"resourceType": "Patient", "id": "bench-patient",
                                               "identifier": [{"system": INS, "value": PATIENT_INS}]})
    client.put(f"/Practitioner/ps-{DOCTOR}", json={"resourceType": "Practitioner", "id": f"ps-{DOCTOR}",
                                                   "identifier": [{"system": RPPS, "value": DOCTOR}]})
    for i in range(documents):
        label = "MASQUE_PS" if i % 10 == 0 else None
        document = pdsm_document(f"bench-doc-{i}", "bench-patient", "Practitioner/ps-author", label=label)
        client.put(f"/DocumentReference/bench-doc-{i}", json=document).raise_for_status()
    consents = [
        _consent(1, {"type": "permit", "provision": [_actor("deny", "10000000009")]}),
        _consent(2, {"type": "permit", "provision": [_actor("deny", "10000000008")]}),
        _consent(3, {"type": "permit", "provision": [_actor("permit", "10000000007")]}),
        _consent(4, {"type": "permit", "provision": [{"type": "deny", "purpose": [{"code": "ETREAT"}]}]}),
        _consent(5, {"type": "permit", "provision": [{"type": "deny", "data": [
            {"meaning": "instance", "reference": {"reference": "DocumentReference/none"}}]}]}),
    ]
    for consent in consents:
        client.put(f"/Consent/{consent['id']}", json=consent).raise_for_status()


def main(operations: int = 300, documents: int = 60, population: int = 3000) -> None:
    print(f"Access-decision benchmark: DocumentReference?patient=... ({documents} documents, 5 Consents, "
          f"{population} documents of 100 other patients), {operations} searches per actor")
    issuer = BenchIssuer()
    actors = {
        "system (no access filter)": issuer.system(),
        "patient (own record)": issuer.headers(devissuer.patient_claims(PATIENT_INS)),
        "professional (5 Consents)": issuer.headers(devissuer.practitioner_claims(DOCTOR, "10")),
    }
    rows: list[Figures] = []
    with database() as uri:
        name = "bench_" + uuid.uuid4().hex[:8]
        # audit off: this measures the access decision alone (the audit has its own figures)
        with server(uri, name, {**issuer.env, "FHIR_AUDIT": "off"}) as base:
            with httpx.Client(base_url=base, headers=issuer.system(), timeout=60) as loader:
                load_population(loader, population)
                load(loader, documents)
            for label, headers in actors.items():
                with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                    def search(_: int, client: httpx.Client = client) -> None:
                        client.get("/DocumentReference", params=QUERY).raise_for_status()
                    search(0)
                    rows.append(run_concurrently(f"search as {label}", 1, operations, search))
        pymongo.MongoClient(uri).drop_database(name)
    print(HEADER)
    for figures in rows:
        print(figures.row())
    baseline = rows[0].percentile(50)
    for figures in rows[1:]:
        print(f"  overhead of {figures.name[10:]}: p50 {figures.percentile(50) / baseline - 1:+.1%}, "
              f"p95 {figures.percentile(95) / rows[0].percentile(95) - 1:+.1%}")
