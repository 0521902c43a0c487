"""The access filter must not cost the index: the common queries, AND-ed with a professional's
and a patient's access filter, still reach the collection through an index (the filter runs on
the documents the index fetched), and return what the same filter gives without the split."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_server.access.actor import Actor
from fhir_server.access.policy import AccessPolicy, RequestAccess
from fhir_server.access.scopes import Scopes
from fhir_server.definitions import load_definitions
from fhir_server.search import SearchRegistry, SearchService
from tests.search.conftest import BASE
from tests.search.test_indexes import COMMON_QUERIES, RecordingStore, stages
from tests.search.test_indexes import data as data  # the same population, autouse in this module too

ALL = Scopes.parse("user/*.*")


def access_filters(store) -> dict[str, object]:
    policy = AccessPolicy(load_definitions(), store, lambda resource_type, params: [])
    doctor = RequestAccess(Actor("practitioner", "dr", ALL, rpps="10000000001", profession="10"),
                           keys=["ps:10000000001"])
    patient_p1 = RequestAccess(Actor("patient", "p1", ALL, ins="18000001"), patients=["Patient/p1"])
    return {"professional": lambda t: policy.read_filter(doctor, t),
            "patient": lambda t: policy.read_filter(patient_p1, t)}


@pytest.mark.parametrize("who", ["professional", "patient"])
@pytest.mark.parametrize(("resource_type", "query"), COMMON_QUERIES)
def test_filtered_common_queries_still_use_an_index(store, registry: SearchRegistry, resource_type: str, query: str,
                                                    who: str) -> None:
    extra = access_filters(store)[who]
    recording = RecordingStore(store)
    service = SearchService(registry, recording)
    params = [tuple(p.split("=", 1)) for p in query.split("&")]
    bundle = service.search(resource_type, params, base_url=BASE, strict=True, extra_filter=extra)
    following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
    if following:
        service.search(resource_type, parse_qsl(urlsplit(following[0]).query), base_url=BASE, strict=True,
                       extra_filter=extra)
    filtered = [q for q in recording.queries if any(k.startswith("$") for k in q[1])]
    assert filtered, "the access filter should reach the store"
    for collection, filter_, sort in recording.queries:
        found = [s["stage"] for s in stages(store.explain(collection, filter_, sort).get("queryPlanner"))]
        assert "COLLSCAN" not in found, (collection, filter_, found)


def test_split_query_gives_the_same_documents_as_one_filter(store, registry: SearchRegistry) -> None:
    """The two-stage execution is an optimisation only: same documents, order, limit and count as
    the single `$and` filter evaluated by the database."""
    access = {"$or": [{"_index.status": "superseded"}, {"_id": {"$in": ["d1", "d2", "d4"]}}]}
    query = {"_index.patient": {"$in": ["Patient/p1", "Patient/p2", "Patient/p4"]}, **access}
    sort = [("_index.date.hi", -1), ("_id", 1)]
    split = store.find("DocumentReference", query, sort, limit=5, projection={"_id": 1})
    whole = list(store.db["DocumentReference"].find({"$and": [query]}, {"_id": 1}).sort(sort).limit(5))
    assert split == whole and len(split) == 5
    assert store.count("DocumentReference", query) == store.db["DocumentReference"].count_documents(query) > 5
    assert store.count("DocumentReference", query, limit=3) == 3


def test_reads_by_id_with_an_access_filter(store) -> None:
    assert store.get("DocumentReference", "d1", where={"_index.status": "current"})["_id"] == "d1"
    assert store.get("DocumentReference", "d3", where={"$or": [{"_index.status": "current"}]}) is None
