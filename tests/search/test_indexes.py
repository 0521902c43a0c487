"""The common practice-software queries are served by the indexes `index_specs` declares: every
query the engine sends for them (first page, following pages, chain links) is checked with
explain() on the real database, and none may be a collection scan."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_server.search import SearchRegistry, SearchService
from tests.search.conftest import BASE, ensure_indexes, id_set, put

INS = "urn:oid:1.2.250.1.213.1.4.8"
TYPES = ("Patient", "DocumentReference", "Immunization", "Appointment", "Practitioner", "Group")


class RecordingStore:
    """The real store, remembering each query it runs so that it can be explained afterwards."""

    def __init__(self, store) -> None:
        self.store = store
        self.queries: list[tuple[str, dict, list | None]] = []

    def find(self, resource_type, query, sort=None, limit=0, projection=None):
        self.queries.append((resource_type, query, sort))
        return self.store.find(resource_type, query, sort, limit, projection)

    def find_and_count(self, resource_type, query, after, sort, limit, projection=None):
        self.queries.append((resource_type, query, sort))
        return self.store.find_and_count(resource_type, query, after, sort, limit, projection)

    def __getattr__(self, name):
        return getattr(self.store, name)


def stages(plan: object) -> Iterator[dict]:
    if hasattr(plan, "items"):
        node = {k: v for k, v in plan.items()}
        if "stage" in node:
            yield node
        for value in node.values():
            yield from stages(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from stages(value)


def patient(n: int) -> dict:
    return {"resourceType": "Patient", "id": f"p{n}", "identifier": [{"system": INS, "value": f"1800{n:04d}"}],
            "name": [{"family": f"Nom{n}"}]}


def document(n: int, patient_n: int) -> dict:
    return {"resourceType": "DocumentReference", "id": f"d{n}", "status": "current" if n % 3 else "superseded",
            "subject": {"reference": f"Patient/p{patient_n}"}, "date": f"2024-0{1 + n % 9}-10T10:00:00+02:00",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4" if n % 2 else "18842-5"}]},
            "author": [{"reference": f"Practitioner/dr{n % 2}"}], "content": [{"attachment": {"url": f"Binary/{n}"}}]}


def immunization(n: int, patient_n: int) -> dict:
    return {"resourceType": "Immunization", "id": f"i{n}", "status": "completed",
            "patient": {"reference": f"Patient/p{patient_n}"}, "occurrenceDateTime": f"2023-0{1 + n % 9}-01",
            "vaccineCode": {"text": "DTP"}}


# Several names per patient: a prefix search must hold for one name, not be met by two together.
MULTI_NAMED = [
    {"resourceType": "Patient", "id": "m1", "name": [{"family": "Abel"}, {"family": "Zola"}]},
    {"resourceType": "Patient", "id": "m2", "name": [{"family": "Durand", "given": ["Hélène"]}]},
    {"resourceType": "Patient", "id": "m3", "name": [{"family": "Dupuis-Delacroix-Montmorency-Vauban"}]},
]


def appointment(n: int) -> dict:
    return {"resourceType": "Appointment", "id": f"a{n}", "status": "booked",
            "start": f"2024-06-{1 + n % 20:02d}T09:00:00Z", "end": f"2024-06-{1 + n % 20:02d}T09:30:00Z",
            "participant": [{"actor": {"reference": f"Practitioner/dr{n % 2}"}, "status": "accepted"},
                            {"actor": {"reference": f"Patient/p{n % 10}"}, "status": "accepted"}]}


@pytest.fixture(scope="module", autouse=True)
def data(store, registry: SearchRegistry) -> None:
    ensure_indexes(store, registry, *TYPES)
    put(store, registry, *(patient(n) for n in range(10)), *(document(n, n % 10) for n in range(60)),
        *(immunization(n, n % 10) for n in range(40)), *(appointment(n) for n in range(40)), *MULTI_NAMED)


COMMON_QUERIES = [
    ("DocumentReference", "patient=Patient/p1&status=current&date=ge2024-03-01&_count=2"),
    ("DocumentReference", "patient=Patient/p1&status=current&_sort=-date&_count=2"),
    ("DocumentReference", "patient=Patient/p1&_sort=-date&_count=2"),
    ("DocumentReference", f"patient.identifier={INS}|18000001&status=current&_count=2"),
    ("DocumentReference", "patient=Patient/p2&date=ge2024-01-01&date=lt2024-07-01&_count=2"),
    ("Immunization", "patient=Patient/p3&_count=2"),
    ("Immunization", "patient=p3&date=ge2023-03-01&_count=2"),
    ("Patient", f"identifier={INS}|18000004"),
    ("Patient", "family=nom4"),
    ("Patient", "family=dur"),
    ("Patient", "family=NOM1,nom2&_count=2"),
    ("Patient", "name=hél"),
    ("Patient", "name=helene dur"),
    ("Patient", "given=HELENE"),
    ("DocumentReference", "patient.family=nom3&status=current&_count=2"),
    ("Appointment", "actor=Practitioner/dr1&date=ge2024-06-05&date=lt2024-06-12&_count=2"),
    ("Appointment", "actor=Practitioner/dr1&status=booked&date=ge2024-06-05&_sort=date&_count=2"),
    # the other queries of the search benchmark
    ("DocumentReference", "patient=Patient/p1&status=current&type=http://loinc.org|11488-4"),
    ("DocumentReference", "patient=Patient/p1&status=current&_include=DocumentReference:author"),
    ("Patient", "_id=p1&_revinclude=Immunization:patient"),
    ("Appointment", "patient=Patient/p1&status=booked"),
]


@pytest.mark.parametrize(("resource_type", "query"), COMMON_QUERIES)
def test_common_queries_use_an_index(store, registry: SearchRegistry, resource_type: str, query: str) -> None:
    recording = RecordingStore(store)
    service = SearchService(registry, recording)
    params = [tuple(p.split("=", 1)) for p in query.split("&")]
    bundle = service.search(resource_type, params, base_url=BASE, strict=True)
    assert id_set(bundle), "the query should find something"
    following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
    if following:                                      # and the keyset queries of the next page
        service.search(resource_type, parse_qsl(urlsplit(following[0]).query), base_url=BASE, strict=True)
    assert recording.queries
    for collection, filter_, sort in recording.queries:
        plan = store.explain(collection, filter_, sort)
        found = [s["stage"] for s in stages(plan.get("queryPlanner", plan))]
        assert "COLLSCAN" not in found, (collection, filter_, found)
        assert "IXSCAN" in found, (collection, filter_, found)


def test_prefix_search_is_one_equality_on_the_stored_prefixes(store, registry: SearchRegistry) -> None:
    """`family` is a list (a birth name and a used name): a range `{$gte: "dup", $lt: "duq"}` would
    be met by two names together, and `$elemMatch` keeps it on one name but the embedded server
    never serves `$elemMatch` from an index. Every prefix of the looked-up strings is stored, so the
    search is one equality on one indexed field, exact on lists."""
    recording = RecordingStore(store)
    bundle = SearchService(registry, recording).search("Patient", [("family", "Nom4")], base_url=BASE)
    assert id_set(bundle) == {"p4"}
    assert recording.queries == [("Patient", {"_index.family:prefix": "nom4"}, [("_id", 1)])]
    assert [("_index.family:prefix", 1)] in registry.index_specs()["Patient"]
    assert [("_index.name:prefix", 1)] in registry.index_specs()["Patient"]


@pytest.mark.parametrize(("query", "expected"), [
    ("family=ab", "m1"),
    ("family=zo", "m1"),
    ("family=b", ""),                     # "abel" and "zola" bracket "b": no name starts with it
    ("family=dup", "m3"),                 # not m2: Hélène Durand has no name starting with "dup"
    ("family=dur", "m2"),
    ("name=dup", "m3"),
    ("name=hel", "m2"),
    ("name=helene d", "m2"),              # the whole name "helene durand"
    ("name=helene z", ""),
    ("given=dur", ""),
    ("family=dupuis-delacroix-montmorency", "m3"),          # longer than the stored prefixes
    ("family=dupuis-delacroix-montmorency-x", ""),
    ("family:exact=Durand", "m2"),
])
def test_prefix_search_on_several_names(service: SearchService, query: str, expected: str) -> None:
    params = [tuple(p.split("=", 1)) for p in query.split("&")]
    found = id_set(service.search("Patient", params, base_url=BASE, strict=True))
    assert found & {"m1", "m2", "m3"} == set(expected.split()), query


def test_a_long_prefix_is_served_by_its_stored_prefix(store, registry: SearchRegistry) -> None:
    """Beyond the stored prefix length: the stored prefix is the flat, indexed part, and the exact
    range on one name narrows it (run on the documents the index fetched)."""
    recording = RecordingStore(store)
    SearchService(registry, recording).search("Patient", [("family", "Dupuis-Delacroix-Montmorency")], base_url=BASE)
    (_, query, sort), = recording.queries
    assert query == {"_index.family:prefix": "dupuis-delacroix-montmor",
                     "$and": [{"_index.family": {"$elemMatch": {"$gte": "dupuis-delacroix-montmorency",
                                                                "$lt": "dupuis-delacroix-montmorencz"}}}]}
    assert "COLLSCAN" not in [s["stage"] for s in stages(store.explain("Patient", query, sort))]


def test_every_type_has_index_specs(registry: SearchRegistry) -> None:
    specs = registry.index_specs()
    assert len(specs) == 146 and set(specs) == set(registry.resource_types)
    # the patient compartment comes first
    assert specs["DocumentReference"][0] == [("_index.subject", 1), ("_id", 1)]
    assert [("_index.patient", 1), ("_index.status", 1), ("_index.date", 1), ("_id", 1)] in specs["DocumentReference"]
    assert [("_index.actor", 1), ("_index.date", 1), ("_id", 1)] in specs["Appointment"]
    assert [("_index.identifier", 1)] in specs["Patient"]
    for type_specs in specs.values():
        for spec in type_specs:
            fields = [f for f, _ in spec]
            assert len(fields) == len(set(fields))
