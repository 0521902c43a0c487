"""Search benchmark: a synthetic French population (patients with INS, practitioners,
DocumentReferences, Immunizations, Appointments), then p50/p95 latency and throughput of the
most common practice-software queries through the HTTP server, the index-extraction cost
per resource written, and what the declared search indexes cost each insert, per collection.

The data is loaded in bulk straight into the database with the server's own index extraction
and access data (loading 100,000 resources through HTTP would measure writes, not searches)."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pymongo

from bench.auth import BenchIssuer
from bench.harness import HEADER, Figures, database, run_concurrently, server
from fhir_server.config import Settings
from fhir_server.engine.model import instant
from fhir_server.search import SearchRegistry
from fhir_server.server import FhirServer
from fhir_server.storage import MongoStore

INS = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "https://rpps.esante.gouv.fr"
FAMILIES = ["Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau", "Laurent",
            "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "David", "Bertrand", "Morel", "Fournier", "Girard"]
GIVEN = ["Élodie", "Hélène", "Jérôme", "Amélie", "François", "Zoé", "Noël", "Chloé", "Léa", "Raphaël"]
DOC_TYPES = [("11488-4", "Compte rendu de consultation"), ("18842-5", "Lettre de sortie"),
             ("57833-6", "Ordonnance"), ("11502-2", "Compte rendu de biologie"), ("18748-4", "Imagerie")]
VACCINES = [("J07CA01", "DTP"), ("J07BB02", "Grippe"), ("J07AL02", "Pneumocoque"), ("J07BD52", "ROR")]


def population(total: int, rng: random.Random) -> list[dict]:
    """Resources in the proportions of a patient file: per patient ~6 documents, 2 immunizations,
    1 appointment; one practitioner per 50 patients."""
    patients = max(1, total // 10)
    practitioners = max(1, patients // 50)
    out: list[dict] = []
    for p in range(practitioners):
        out.append({"resourceType": "Practitioner", "id": f"ps-{p}",
                    "identifier": [{"system": RPPS, "value": f"1{p:010d}"}],
                    "name": [{"family": rng.choice(FAMILIES), "given": [rng.choice(GIVEN)]}]})
    start = datetime(2026, 1, 1, 8, tzinfo=UTC)
    for p in range(patients):
        pid = f"pat-{p}"
        out.append({"resourceType": "Patient", "id": pid, "identifier": [{"system": INS, "value": f"2{p:014d}"}],
                    "name": [{"family": rng.choice(FAMILIES), "given": [rng.choice(GIVEN)]}],
                    "gender": rng.choice(["female", "male"]),
                    "birthDate": f"{rng.randint(1930, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"})
        author = f"Practitioner/ps-{rng.randrange(practitioners)}"
        for d in range(6):
            code, display = rng.choice(DOC_TYPES)
            out.append({"resourceType": "DocumentReference", "id": f"{pid}-doc-{d}",
                        "status": "current" if d else "superseded",
                        "type": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                        "subject": {"reference": f"Patient/{pid}"}, "author": [{"reference": author}],
                        "date": instant(start + timedelta(days=rng.randrange(300), minutes=rng.randrange(600))),
                        "content": [{"attachment": {"contentType": "application/pdf", "title": display}}]})
        for i in range(2):
            code, display = rng.choice(VACCINES)
            out.append({"resourceType": "Immunization", "id": f"{pid}-imm-{i}", "status": "completed",
                        "vaccineCode": {"coding": [{"system": "http://www.whocc.no/atc", "code": code,
                                                    "display": display}]},
                        "patient": {"reference": f"Patient/{pid}"},
                        "occurrenceDateTime": f"20{rng.randint(10, 26)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"})
        slot = start + timedelta(days=330 + rng.randrange(30), hours=rng.randrange(9))
        out.append({"resourceType": "Appointment", "id": f"{pid}-rdv", "status": "booked",
                    "start": instant(slot), "end": instant(slot + timedelta(minutes=20)),
                    "participant": [{"actor": {"reference": f"Patient/{pid}"}, "status": "accepted"},
                                    {"actor": {"reference": author}, "status": "accepted"}]})
    return out[:total] if len(out) > total else out


def observations(total: int, patients: int, rng: random.Random) -> list[dict]:
    """Lab results (not in the population: only for the write cost of Observation's indexes)."""
    tests = [("2339-0", "mg/dL", 70, 180), ("8480-6", "mm[Hg]", 90, 180), ("718-7", "g/dL", 9, 18)]
    out = []
    for n in range(total):
        code, unit, low, high = rng.choice(tests)
        out.append({"resourceType": "Observation", "id": f"obs-{n}", "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                    "subject": {"reference": f"Patient/pat-{rng.randrange(patients)}"},
                    "effectiveDateTime": f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                    "valueQuantity": {"value": rng.randint(low, high), "unit": unit,
                                      "system": "http://unitsofmeasure.org", "code": unit}})
    return out


def index_write_costs(uri: str, registry: SearchRegistry, resources: list[dict], rounds: int = 3) -> None:
    """µs per insert into a collection with the declared search indexes and into one with only the
    two every collection has: the difference is what the search indexes cost each write. The best
    of `rounds` (the machine is shared)."""
    by_type: dict[str, list[dict]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(
            {"_id": resource["id"], "resource": resource, "_index": registry.extract_index(resource)})
    print(f"\nindex write cost (µs per insert, best of {rounds}):")
    print(f"  {'collection':<20} {'indexes':>7} {'declared':>9} {'none':>7} {'difference':>10}")
    declared_specs = registry.index_specs()
    for resource_type in ("Patient", "DocumentReference", "Immunization", "Appointment", "Observation"):
        docs = by_type.get(resource_type, [])[:2000]
        specs = declared_specs[resource_type]
        declared = min(_insert_time(uri, resource_type, docs, specs) for _ in range(rounds))
        bare = min(_insert_time(uri, resource_type, docs, []) for _ in range(rounds))
        print(f"  {resource_type:<20} {len(specs):>7} {declared:>9.0f} {bare:>7.0f} {declared - bare:>+10.0f}")


def _insert_time(uri: str, resource_type: str, docs: list[dict], specs: list) -> float:
    store = MongoStore(uri, "bench_idx_" + uuid.uuid4().hex[:8])
    try:
        store.ensure_collections({resource_type: specs})
        started = time.perf_counter()
        for i in range(0, len(docs), 500):
            store.db[resource_type].insert_many([dict(d) for d in docs[i:i + 500]], ordered=False)
        return (time.perf_counter() - started) / max(1, len(docs)) * 1e6
    finally:
        store.drop_everything()
        store.close()


def bulk_load(fhir: FhirServer, resources: list[dict]) -> tuple[float, float]:
    """Insert current versions and history in batches; returns (seconds, extraction µs/resource)."""
    moment = datetime.now(UTC).replace(microsecond=0)
    by_type: dict[str, list[dict]] = {}
    history: list[dict] = []
    extraction = 0.0
    for resource in resources:
        resource["meta"] = {"versionId": "1", "lastUpdated": instant(moment)}
        started = time.perf_counter()
        index = fhir.search_registry.extract_index(resource)
        extraction += time.perf_counter() - started
        doc = {"_id": resource["id"], "resource": resource, "_ver": 1, "_lastUpdated": moment, "_index": index}
        acl = fhir.policy.acl_for(resource["resourceType"], resource, index)
        if acl:
            doc["_acl"] = acl
        by_type.setdefault(resource["resourceType"], []).append(doc)
        history.append({"_id": f"{resource['resourceType']}/{resource['id']}/1", "type": resource["resourceType"],
                        "id": resource["id"], "ver": 1, "method": "POST", "lastUpdated": moment,
                        "resource": resource, **({"_acl": acl} if acl else {})})
    started = time.perf_counter()
    db = fhir.store.db
    for resource_type, docs in by_type.items():
        for i in range(0, len(docs), 1000):
            db[resource_type].insert_many(docs[i:i + 1000], ordered=False)
    for i in range(0, len(history), 1000):
        db["_history"].insert_many(history[i:i + 1000], ordered=False)
    return time.perf_counter() - started, extraction / len(resources) * 1e6


def queries(rng: random.Random, patients: int, practitioners: int) -> dict[str, callable]:
    def patient() -> str:
        return f"pat-{rng.randrange(patients)}"

    def ins() -> str:
        return f"{INS}|2{rng.randrange(patients):014d}"

    return {
        "DocRef?patient&status&_sort=-date": lambda: ("DocumentReference", {"patient": patient(), "status": "current",
                                                                              "_sort": "-date"}),
        "DocRef?patient&status&type": lambda: ("DocumentReference", {"patient": patient(), "status": "current",
                                                                     "type": "http://loinc.org|11488-4"}),
        "Immunization?patient": lambda: ("Immunization", {"patient": patient()}),
        "Appointment?actor&date range": lambda: ("Appointment", {
            "actor": f"Practitioner/ps-{rng.randrange(practitioners)}", "date": ["ge2026-11-27", "lt2026-12-04"]}),
        "Patient?identifier=INS": lambda: ("Patient", {"identifier": ins()}),
        "DocRef?patient.identifier (chain)": lambda: ("DocumentReference", {"patient.identifier": ins(),
                                                                             "status": "current"}),
        "DocRef?patient&_include=author": lambda: ("DocumentReference", {
            "patient": patient(), "status": "current", "_include": "DocumentReference:author"}),
        "Patient?_id&_revinclude=Immunization": lambda: ("Patient", {
            "_id": patient(), "_revinclude": "Immunization:patient"}),
        "Patient?family (prefix, accents)": lambda: ("Patient", {"family": rng.choice(["lefev", "Moreau", "gir"]),
                                                                 "_count": "10"}),
        "Patient?name (prefix, accents)": lambda: ("Patient", {"name": rng.choice(["hél", "Zoé", "jer"]),
                                                               "_count": "10"}),
        "Appointment?patient&status": lambda: ("Appointment", {"patient": patient(), "status": "booked"}),
    }


def main(total: int = 100_000, operations: int = 200) -> None:
    rng = random.Random(20261123)
    resources = population(total, rng)
    patients = sum(1 for r in resources if r["resourceType"] == "Patient")
    practitioners = sum(1 for r in resources if r["resourceType"] == "Practitioner")
    print(f"Search benchmark: {len(resources)} resources ({patients} patients), {operations} queries each")
    issuer = BenchIssuer()
    with database() as uri:
        name = "bench_" + uuid.uuid4().hex[:8]
        fhir = FhirServer(Settings(mongodb_db=name), uri)
        fhir.start()
        seconds, extraction_us = bulk_load(fhir, resources)
        print(f"bulk load: {len(resources) / seconds:,.0f} resources/s; index extraction "
              f"{extraction_us:.0f} µs per resource (mean over the population)")
        index_write_costs(uri, fhir.search_registry,
                          resources + observations(min(2000, total), patients, random.Random(3)))
        fhir.close()
        tables: dict[str, list[Figures]] = {}
        for audit in ("on", "off"):
            rows: list[Figures] = tables.setdefault(audit, [])
            with server(uri, name, {**issuer.env, "FHIR_AUDIT": audit}) as base, \
                    httpx.Client(base_url=base, headers=issuer.system(), timeout=120) as client:
                for label, make in queries(random.Random(7), patients, practitioners).items():
                    def run(_: int, make=make, client=client) -> None:
                        resource_type, params = make()
                        client.get(f"/{resource_type}", params=params).raise_for_status()
                    run(0)
                    rows.append(run_concurrently(label, 1, operations, run))
        pymongo.MongoClient(uri).drop_database(name)
    for audit, rows in tables.items():
        print(f"\naudit {audit}:")
        print(HEADER)
        for figures in rows:
            print(figures.row())
    print("\naudit overhead (p50 with audit / p50 without):")
    for on, off in zip(tables["on"], tables["off"], strict=True):
        print(f"  {on.name:<38} {on.percentile(50) / off.percentile(50) - 1:+7.0%}")
