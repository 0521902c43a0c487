"""Cost of the access decision: `DocumentReference?patient=...` as a professional under a
patient with 5 Consents, as the patient, and with access control out of the way (a back-end
system token, no filter), in the same run against the same data. Other patients' documents
fill the collection around the measured record, so a query that left the index for a
collection scan would show here.

Over HTTP the filtered searches take another plan than the unfiltered one: a query whose filter
is tested on each fetched document gets its page and total from one database pass, while an
index-served query keeps a limited fetch plus an index count. So the search engine is also
timed in-process on the same data, with the unfiltered query forced onto the one-pass plan by a
filter that lets everything through: the difference there is the access decision alone."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import pymongo

from bench.auth import BenchIssuer
from bench.harness import HEADER, Figures, database, run_concurrently, server
from fhir_server.access import devissuer
from fhir_server.access.tokens import actor_from_claims
from fhir_server.config import Settings
from fhir_server.server import FhirServer
from tests.documents import pdsm_document

INS = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "https://rpps.esante.gouv.fr"
PATIENT_INS = "284037512345640"
DOCTOR = "10000000001"
# `_total=accurate` is what an ITI-67 answer carries anyway (the MHD find-response profiles require it)
QUERY = {"patient": "bench-patient", "status": "current", "_total": "accurate"}
LETS_EVERYTHING_THROUGH = {"$or": [{"_id": {"$exists": True}}]}     # no decision, but the filtered plan


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
        engine_rows = engine_alone(uri, name, operations)
        pymongo.MongoClient(uri).drop_database(name)
    print(HEADER)
    for figures in rows:
        print(figures.row())
    print_overheads(rows[0], rows[1:])
    print("Search engine alone, in-process (no HTTP, no token check):")
    for figures in engine_rows:
        print(figures.row())
    print_overheads(engine_rows[1], engine_rows[2:])


def print_overheads(baseline: Figures, others: list[Figures]) -> None:
    for figures in others:
        print(f"  {figures.name} vs {baseline.name}: p50 {figures.percentile(50) / baseline.percentile(50) - 1:+.1%}, "
              f"p95 {figures.percentile(95) / baseline.percentile(95) - 1:+.1%}")


def engine_alone(uri: str, name: str, operations: int) -> list[Figures]:
    """`SearchService.search` with each actor's access filter, and without one on both plans."""
    server = FhirServer(Settings(mongodb_db=name), uri)
    policy = server.policy

    def filter_of(claims: dict) -> Callable[[str], dict | None]:
        access = policy.request_access(actor_from_claims(claims))
        return lambda resource_type: policy.read_filter(access, resource_type)

    filters = {
        "engine, no filter": None,
        "engine, no filter, one pass": LETS_EVERYTHING_THROUGH,
        "engine, patient": filter_of(devissuer.patient_claims(PATIENT_INS)),
        "engine, professional": filter_of(devissuer.practitioner_claims(DOCTOR, "10")),
    }
    rows = []
    for label, extra in filters.items():
        def search(extra: object = extra) -> None:
            server.search.search("DocumentReference", list(QUERY.items()), base_url="http://bench/fhir",
                                 extra_filter=extra)
        search()
        latencies = []
        started = time.perf_counter()
        for _ in range(operations):
            begin = time.perf_counter()
            search()
            latencies.append(time.perf_counter() - begin)
        rows.append(Figures(label, 1, operations, time.perf_counter() - started, latencies))
    server.close()
    return rows

