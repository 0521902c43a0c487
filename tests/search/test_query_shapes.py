"""Every query shape, per parameter type, against the indexes `index_specs` declares: each query the
engine sends to the database (chain and `_has` links included) is explained on the real database,
and none may be a collection scan, except the shapes listed in ALLOWED_SCANS with the reason no
index serves them. Each shape's results are checked too: shaping a filter for an index must not
change what it finds."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_server.search import SearchRegistry, SearchService
from tests.search.conftest import BASE, ensure_indexes, id_set, put
from tests.search.test_indexes import RecordingStore, stages

INS = "urn:oid:1.2.250.1.213.1.4.8"
V2_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
TAGS = "http://espace.example/tags"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
TYPES = ("Patient", "Observation", "Immunization", "DocumentReference", "Appointment", "Encounter",
         "RiskAssessment", "Practitioner")


def patient(ident: str, family: str, birth: str, updated: str, **more: object) -> dict:
    return {"resourceType": "Patient", "id": ident, "name": [{"family": family}], "birthDate": birth,
            "meta": {"lastUpdated": updated, **more.pop("meta", {})}, **more}


def observation(ident: str, subject: str, code: str, **more: object) -> dict:
    return {"resourceType": "Observation", "id": ident, "status": "final", "subject": {"reference": subject},
            "code": {"coding": [{"system": LOINC, "code": code}]}, **more}


def quantity(value: int, unit: str) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def risk(ident: str, *probabilities: str) -> dict:
    return {"resourceType": "RiskAssessment", "id": ident, "status": "final", "subject": {"reference": "Patient/p1"},
            "prediction": [{"probabilityDecimal": Decimal(p)} for p in probabilities]}


RESOURCES = [
    patient("p1", "Durand", "1980-05-01", "2024-02-01T10:00:00Z",
            name=[{"family": "Durand", "given": ["Hélène"]}],
            identifier=[{"system": INS, "value": "1800001",
                         "type": {"coding": [{"system": V2_0203, "code": "INS-NIR"}], "text": "NIR"}}],
            meta={"tag": [{"system": TAGS, "code": "test"}], "security": [{"system": CONFIDENTIALITY, "code": "R"}],
                  "profile": [FR_CORE + "fr-core-patient"]}),
    patient("p2", "Dupuis-Delacroix-Montmorency-Vauban", "1975", "2023-01-01T10:00:00Z",
            identifier=[{"system": "urn:oid:1.2.3", "value": "42"}, {"system": INS, "value": "1750002"}],
            meta={"profile": [FR_CORE + "fr-core-patient-ins"]}),
    patient("p3", "Martin", "2001-12-31", "2023-01-01T10:00:00Z", identifier=[{"value": "X9"}]),
    patient("p4", "Zola", "1960-01-01", "2023-01-01T10:00:00Z"),
    {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Morel"}]},
    observation("o1", "Patient/p1", "8480-6", valueQuantity=quantity(142, "mm[Hg]"),
                effectiveDateTime="2024-03-01"),
    observation("o2", "Patient/p2", "2339-0", valueQuantity=quantity(5400, "mg")),
    observation("o3", "Patient/p1", "85354-9", component=[
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": quantity(120, "mm[Hg]")},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": quantity(80, "mm[Hg]")}]),
    {"resourceType": "Immunization", "id": "i1", "status": "completed", "patient": {"reference": "Patient/p1"},
     "occurrenceDateTime": "2023-05-01", "vaccineCode": {"text": "DTP"}},
    {"resourceType": "DocumentReference", "id": "d1", "status": "current", "date": "2024-05-01T10:00:00+02:00",
     "subject": {"reference": "Patient/p1", "identifier": {"system": INS, "value": "1800001"}},
     "author": [{"reference": "Practitioner/dr1"}], "content": [{"attachment": {"url": "Binary/1"}}],
     "type": {"coding": [{"system": LOINC, "code": "11488-4"}]}},
    {"resourceType": "Appointment", "id": "a1", "status": "booked", "start": "2024-06-05T09:00:00Z",
     "end": "2024-06-05T09:30:00Z", "participant": [{"actor": {"reference": "Practitioner/dr1"}, "status": "accepted"},
                                                    {"actor": {"reference": "Patient/p1"}, "status": "accepted"}]},
    {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
     "subject": {"reference": "Patient/p1"}, "period": {"start": "2024-01-10", "end": "2024-01-12"}},
    risk("r1", "0.7"),
    risk("r2", "0.2"),
    risk("r3", "0.1", "0.9"),              # two predictions: each criterion may hold for a different one
]

# (resource type, query, the ids it finds)
SHAPES = [
    # string
    ("Patient", "family=dur", "p1"),
    ("Patient", "family=DUPUIS-DELACROIX-MONTMORENCY-V", "p2"),           # longer than the stored prefixes
    ("Patient", "family:exact=Durand", "p1"),
    ("Patient", "family:exact=durand", ""),
    ("Patient", "name=hél", "p1"),
    ("Patient", "name:contains=ura", "p1"),
    # token
    ("Patient", "identifier=1800001", "p1"),
    ("Patient", f"identifier={INS}|1800001", "p1"),
    ("Patient", "identifier=|X9", "p3"),
    ("Patient", f"identifier={INS}|", "p1 p2"),
    ("Patient", f"identifier={INS}|&identifier=urn:oid:1.2.3|", "p2"),     # each on its own identifier
    ("Patient", f"identifier:of-type={V2_0203}|INS-NIR|1800001", "p1"),
    ("Patient", f"identifier:not={INS}|1800001", "p2 p3 p4"),
    ("Patient", "identifier:text=nir", "p1"),
    ("Patient", "identifier:missing=true", "p4"),
    ("Patient", "identifier:missing=false", "p1 p2 p3"),
    ("Patient", f"identifier={INS}|,urn:oid:1.2.3|", "p1 p2"),
    ("Observation", f"code={LOINC}|8480-6", "o1"),
    ("Observation", "code=8480-6,2339-0", "o1 o2"),
    ("Observation", f"code={LOINC}|", "o1 o2 o3"),
    ("Observation", f"patient=Patient/p1&code={LOINC}|8480-6", "o1"),
    # meta parameters, one shared index
    ("Patient", f"_tag={TAGS}|test", "p1"),
    ("Patient", "_tag=test", "p1"),
    ("Patient", f"_tag={TAGS}|", "p1"),
    ("Patient", f"_security={CONFIDENTIALITY}|R", "p1"),
    ("Patient", f"_profile={FR_CORE}fr-core-patient", "p1"),
    ("Patient", f"_profile:below={FR_CORE}", "p1 p2"),
    ("Patient", f"_profile:above={FR_CORE}fr-core-patient-ins/x", "p2"),
    # reference
    ("DocumentReference", "patient=Patient/p1", "d1"),
    ("DocumentReference", "patient=p1", "d1"),
    ("DocumentReference", "subject:Patient=p1", "d1"),
    ("DocumentReference", "author=Practitioner/dr1", "d1"),
    ("DocumentReference", f"subject:identifier={INS}|1800001", "d1"),
    # date
    ("Patient", "birthdate=1980-05-01", "p1"),
    ("Patient", "birthdate=ge1990", "p3"),
    ("Patient", "birthdate=gt1980-05-01", "p3"),
    ("Patient", "birthdate=lt1978", "p2 p4"),
    ("Patient", "birthdate=le1975", "p2 p4"),
    ("Patient", "birthdate=sa1990", "p3"),
    ("Patient", "birthdate=eb1976", "p2 p4"),
    ("Patient", "birthdate=ap1980-05-01", "p1 p2"),           # ± 10% of the 45 years to now
    ("Patient", "birthdate=ne1980-05-01", "p2 p3 p4"),
    ("Patient", "_lastUpdated=ge2024-01-01", "p1"),
    ("Patient", "_lastUpdated=2024-02-01", "p1"),
    ("Immunization", "patient=Patient/p1&date=2023-05-01", "i1"),
    ("Immunization", "patient=Patient/p1&date=ge2023-01-01", "i1"),
    ("Appointment", "actor=Practitioner/dr1&date=ge2024-06-01&date=lt2024-07-01", "a1"),
    ("Encounter", "date=lt2025", "e1"),
    # number (a list of predictions), with the subject whose index serves it
    ("RiskAssessment", "subject=Patient/p1&probability=gt0.5", "r1 r3"),
    ("RiskAssessment", "subject=Patient/p1&probability=0.7", "r1"),
    ("RiskAssessment", "subject=Patient/p1&probability=gt0.5&probability=lt0.3", "r3"),
    ("RiskAssessment", "probability=gt0.5", "r1 r3"),
    ("RiskAssessment", "probability=ne0.7", "r2 r3"),
    # quantity, with the code whose index serves it
    ("Observation", f"code={LOINC}|8480-6&value-quantity=gt140", "o1"),
    ("Observation", f"code={LOINC}|8480-6&value-quantity=142|{UCUM}|mm[Hg]", "o1"),
    ("Observation", f"code={LOINC}|2339-0&value-quantity=5.4|{UCUM}|g", "o2"),          # 5400 mg
    ("Observation", "value-quantity=gt140", "o1 o2"),         # without a unit: the number as written
    # composite
    ("Observation", f"code-value-quantity={LOINC}|8480-6$gt140", "o1"),
    ("Observation", f"code-value-quantity={LOINC}|8480-6$lt140", ""),
    ("Observation", f"component-code-value-quantity={LOINC}|8480-6$120", "o3"),
    # ids, chains, reverse chains
    ("Patient", "_id=p1,p2", "p1 p2"),
    ("DocumentReference", f"patient.identifier={INS}|1800001", "d1"),
    ("DocumentReference", "patient.family=dur", "d1"),
    ("Observation", "subject:Patient.birthdate=1980-05-01", "o1 o3"),
    ("Patient", f"_has:Observation:patient:code={LOINC}|8480-6", "p1"),
]

# Shapes that reach the collection without an index, and why.
NEGATION = "a negation matches every resource without the value: no index range selects them"
NUMBER_ALONE = "a threshold alone compares the values of every analyte or risk: not indexed (it would cost " \
               "every write), searched with the code or subject whose index serves it"
ALLOWED_SCANS = {
    "name:contains=ura": "a substring: it would take a trigram index (HAPI's :contains too), which would "
                         "cost every write of every string for a rare search",
    f"identifier:not={INS}|1800001": NEGATION,
    "birthdate=ne1980-05-01": NEGATION,
    "probability=ne0.7": NEGATION,
    "probability=gt0.5": NUMBER_ALONE,
    "value-quantity=gt140": NUMBER_ALONE,
    "identifier:text=nir": "words of display texts: no full-text index (a rare search; MongoDB allows one "
                           "text index per collection)",
    "identifier:missing=true": "the absence of any value (and of a text): an index does not list what a "
                               "resource lacks",
    "identifier:missing=false": "any value or text: the whole index would be read",
    f"identifier={INS}|,urn:oid:1.2.3|": "alternatives without a common field ($or): MongoDB serves each "
                                         "branch by the index, the embedded planner serves no $or",
    f"subject:identifier={INS}|1800001": "identifiers inside references are not indexed: they are searched "
                                         "through chains (patient.identifier)",
    "date=lt2025": "Encounter.period may be open-ended: `lt`/`le` compare its start, and only its end is "
                   "indexed (for the newest-first sort)",
    f"component-code-value-quantity={LOINC}|8480-6$120": "its first component, component-code, has no index",
}


@pytest.fixture(scope="module", autouse=True)
def data(store, registry: SearchRegistry) -> None:
    ensure_indexes(store, registry, *TYPES)
    put(store, registry, *RESOURCES)


def plans(store, queries: list[tuple[str, dict, list | None]]) -> list[list[str]]:
    return [[s["stage"] for s in stages(store.explain(t, q, sort))] for t, q, sort in queries]


@pytest.mark.parametrize(("resource_type", "query", "expected"), SHAPES, ids=[f"{t}?{q}" for t, q, _e in SHAPES])
def test_query_shape(store, registry: SearchRegistry, resource_type: str, query: str, expected: str) -> None:
    recording = RecordingStore(store)
    params = [tuple(p.split("=", 1)) for p in query.split("&")]
    bundle = SearchService(registry, recording).search(resource_type, params, base_url=BASE, strict=True)
    assert id_set(bundle) == set(expected.split()), query
    found = plans(store, recording.queries)
    if query in ALLOWED_SCANS:
        # the list stays honest: a shape an index now serves must leave it
        assert any("COLLSCAN" in plan for plan in found), f"{query} is now index-served: not an allowed scan"
    else:
        for (collection, filter_, _sort), plan in zip(recording.queries, found, strict=True):
            assert "COLLSCAN" not in plan, (collection, filter_, plan)


@pytest.mark.parametrize(("resource_type", "query"), [
    ("Patient", f"identifier={INS}|"), ("Patient", f"_profile:below={FR_CORE}"), ("Patient", "birthdate=lt1978"),
    ("Observation", f"code={LOINC}|"), ("Patient", "family=d"),
])
def test_following_pages_stay_on_the_index(store, registry: SearchRegistry, resource_type: str, query: str) -> None:
    """The keyset condition of a following page (`_id` after the last one) rides along."""
    params = [tuple(p.split("=", 1)) for p in query.split("&")]
    expected = id_set(SearchService(registry, store).search(resource_type, params, base_url=BASE))
    recording = RecordingStore(store)
    service = SearchService(registry, recording)
    bundle = service.search(resource_type, [*params, ("_count", "1")], base_url=BASE, strict=True)
    seen = id_set(bundle)
    while (url := next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)) is not None:
        bundle = service.search(resource_type, parse_qsl(urlsplit(url).query), base_url=BASE, strict=True)
        seen |= id_set(bundle)
    assert seen == expected and len(expected) > 1
    for (collection, filter_, _sort), plan in zip(recording.queries, plans(store, recording.queries), strict=True):
        assert "COLLSCAN" not in plan, (collection, filter_, plan)


def test_allowed_scans_are_shapes_of_the_table() -> None:
    assert set(ALLOWED_SCANS) <= {query for _t, query, _e in SHAPES}


def test_index_count_stays_reasonable(registry: SearchRegistry) -> None:
    """Every index costs every write: the busiest collections keep to a dozen (besides the two
    every collection has, `_lastUpdated` and the access data)."""
    specs = registry.index_specs()
    assert max(len(type_specs) for type_specs in specs.values()) <= 12
    assert all([("_index._meta", 1)] in type_specs for type_specs in specs.values())
