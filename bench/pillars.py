"""Business pillars: the bulk feed of a vaccination record (Immunizations in batch and transaction
Bundles, every entry through the vaccination rules) in resources per second, and the latency of
`Composition/[id]/$document` for a medical summary of 50 entries (plus patient, author and
custodian), as a professional and as a back-end system.

`python -m bench pillars [--operations N]`: N Immunizations per feed mode and N `$document` calls.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pymongo

from bench.auth import BenchIssuer
from bench.harness import HEADER, Figures, database, run_concurrently, server
from fhir_server.access import devissuer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BUNDLE_SIZES = (100, 500)
SUMMARY_ENTRIES = {"Condition": 20, "AllergyIntolerance": 5, "MedicationStatement": 20, "Procedure": 5}
SECTION_OF = {"Condition": "11450-4", "AllergyIntolerance": "48765-2", "MedicationStatement": "10160-0",
              "Procedure": "47519-4"}
SECTION_DISPLAY = {"11450-4": "Problem list - Reported", "48765-2": "Allergies and adverse reactions Document",
                   "10160-0": "History of Medication use Narrative", "47519-4": "History of Procedures Document",
                   "46264-8": "History of medical device use"}
DOCTOR_RPPS = "10003456786"
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Synthèse</p></div>'}


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def load_people(client: httpx.Client) -> None:
    """The patient (FR Core Patient INS, as the summary profile wants), GP and custodian of the examples."""
    for name in ("patient-ins.json", "practitioner-rpps.json", "organization-finess.json"):
        resource = example(name)
        client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource).raise_for_status()


# -- Immunization bulk feed -------------------------------------------------------------------------
def immunization(i: int) -> dict:
    return {"resourceType": "Immunization", "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J07BB02"}]},
            "patient": {"reference": "Patient/exemple-patient-ins"},
            "occurrenceDateTime": f"2025-10-{i % 28 + 1:02d}T10:00:00+02:00", "primarySource": True,
            "lotNumber": f"LOT{i:06d}",
            "performer": [{"actor": {"reference": "Practitioner/exemple-medecin-generaliste"}}],
            "protocolApplied": [{"doseNumberPositiveInt": 1}]}


def feed(client: httpx.Client, kind: str, total: int, size: int) -> Figures:
    """`total` Immunizations in Bundles of `size` entries; one client, bundles one after another."""
    latencies = []
    started = time.perf_counter()
    for first in range(0, total, size):
        entries = [{"resource": immunization(i), "request": {"method": "POST", "url": "Immunization"}}
                   for i in range(first, min(first + size, total))]
        begun = time.perf_counter()
        response = client.post("/", json={"resourceType": "Bundle", "type": kind, "entry": entries})
        response.raise_for_status()
        if not all(e["response"]["status"].startswith("201") for e in response.json()["entry"]):
            raise RuntimeError(f"a {kind} entry was refused")
        latencies.append(time.perf_counter() - begun)
    return Figures(f"Immunization {kind} of {size}", 1, total, time.perf_counter() - started, latencies)


# -- $document ---------------------------------------------------------------------------------------
def entry_resource(resource_type: str, i: int) -> dict:
    subject = {"reference": "Patient/exemple-patient-ins"}
    concept = {"coding": [{"system": "http://snomed.info/sct", "code": str(100000 + i)}],
               "text": f"{resource_type} {i}"}
    if resource_type == "Condition":
        return {"resourceType": "Condition", "code": concept, "subject": subject, "clinicalStatus": {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}}
    if resource_type == "AllergyIntolerance":
        return {"resourceType": "AllergyIntolerance", "code": concept, "patient": subject}
    if resource_type == "MedicationStatement":
        return {"resourceType": "MedicationStatement", "status": "active", "medicationCodeableConcept": concept,
                "subject": subject}
    return {"resourceType": "Procedure", "status": "completed", "code": concept, "subject": subject}


def load_summary(client: httpx.Client) -> str:
    """A summary of 50 entries; returns its Composition id."""
    entries: dict[str, list[str]] = {code: [] for code in SECTION_DISPLAY}
    for resource_type, count in SUMMARY_ENTRIES.items():
        for i in range(count):
            created = client.post(f"/{resource_type}", json=entry_resource(resource_type, i))
            created.raise_for_status()
            entries[SECTION_OF[resource_type]].append(f"{resource_type}/{created.json()['id']}")
    sections = []
    for code, references in entries.items():
        section = {"title": SECTION_DISPLAY[code], "text": NARRATIVE, "code": {"coding": [
            {"system": "http://loinc.org", "code": code, "display": SECTION_DISPLAY[code]}]}}
        if references:
            section["entry"] = [{"reference": r} for r in references]
        else:
            section["emptyReason"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
                                                  "code": "nilknown"}]}
        sections.append(section)
    composition = {
        "resourceType": "Composition",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "status": "final", "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5",
                                                "display": "Patient summary Document"}]},
        "subject": {"reference": "Patient/exemple-patient-ins"}, "date": "2026-11-20T15:00:00+01:00",
        "author": [{"reference": "Practitioner/exemple-medecin-generaliste"}], "title": "Synthèse médicale",
        "custodian": {"reference": "Organization/exemple-centre-hospitalier"},
        "event": [{"period": {"start": "2026-11-20"}}], "section": sections,
    }
    response = client.post("/Composition", json=composition)
    if response.status_code != 201:
        raise RuntimeError(f"the summary was refused: {response.text}")
    return response.json()["id"]


def document_latency(base: str, composition_id: str, label: str, headers: dict[str, str],
                     operations: int) -> Figures:
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        def call(_: int) -> None:
            response = client.get(f"/Composition/{composition_id}/$document")
            response.raise_for_status()
            if len(response.json()["entry"]) < 54:
                raise RuntimeError("the document misses resources")
        call(0)                                   # warm-up: profiles and search plans compiled
        return run_concurrently(f"$document 50 entries, {label}", 1, operations, call)


def main(operations: int = 300) -> None:
    print(f"Pillars benchmark: {operations} Immunizations per feed mode (Bundles of {BUNDLE_SIZES}), "
          f"{operations} $document calls on a 50-entry summary")
    issuer = BenchIssuer()
    rows: list[Figures] = []
    with database() as uri:
        name = "bench_" + uuid.uuid4().hex[:8]
        with server(uri, name, issuer.env) as base:
            with httpx.Client(base_url=base, headers=issuer.system(), timeout=300) as client:
                load_people(client)
                for size in BUNDLE_SIZES:
                    total = max(operations, size)
                    rows.append(feed(client, "batch", total, size))
                    rows.append(feed(client, "transaction", total, size))
                composition_id = load_summary(client)
            doctor = issuer.headers(devissuer.practitioner_claims(DOCTOR_RPPS, "10"))
            rows.append(document_latency(base, composition_id, "professional", doctor, operations))
            rows.append(document_latency(base, composition_id, "system", issuer.system(), operations))
        pymongo.MongoClient(uri).drop_database(name)
    print(HEADER.replace("ops/s", "res/s"))
    for figures in rows:
        print(figures.row())
    print("(feeds: res/s = Immunizations stored per second, p50/p95 = per Bundle; $document: p50/p95 per call)")
