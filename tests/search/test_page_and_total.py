"""A page and its total from one database pass: when the query tests operators on every document
its index fetches (an access filter), the page and the count come from one `$facet`; an
index-served query keeps its limited fetch and index-only count. Both give exactly what a
separate page and count give, on every page, and a result too large for one `$facet` document
falls back to the separate commands."""

from __future__ import annotations

import pymongo.collection
import pytest
from pymongo.errors import OperationFailure

from fhir_server.search import SearchService
from fhir_server.search.filters import and_filters
from fhir_server.search.fitting import IndexFittedStore
from tests.search.conftest import BASE, put

ACCESS = {"$or": [{"_acl.deny": {"$nin": ["!masked"]}}, {"_acl.authors": {"$in": ["ps:1"]}}]}
SORT = [("_id", 1)]


def document(n: int) -> dict:
    return {"resourceType": "DocumentReference", "id": f"d{n:02d}", "status": "current" if n % 4 else "superseded",
            "subject": {"reference": "Patient/p1" if n % 3 else "Patient/p2"},
            "content": [{"attachment": {"contentType": "text/plain"}}]}


@pytest.fixture(scope="module", autouse=True)
def data(store, registry):
    put(store, registry, *(document(n) for n in range(30)))
    # the access data a write would set: every fifth document masked, d05 authored by ps:1
    for n in range(0, 30, 5):
        authors = ["ps:1"] if n == 5 else []
        store.update_many("DocumentReference", {"_id": f"d{n:02d}"},
                          {"$set": {"_acl": {"deny": ["!masked"], "authors": authors}}})


class CallLog:
    """The real store, remembering which of its query methods ran."""

    def __init__(self, store) -> None:
        self.store, self.calls = store, []

    def __getattr__(self, name):
        method = getattr(self.store, name)
        if name in ("find", "count", "find_and_count"):
            def logged(*args, **kwargs):
                self.calls.append(name)
                return method(*args, **kwargs)
            return logged
        return method


def separately(store, query: dict, after: dict, limit: int) -> tuple[list[dict], int]:
    return (store.find("DocumentReference", and_filters(query, after), SORT, limit, {"resource": 1}),
            store.count("DocumentReference", query))


@pytest.mark.parametrize("after", [{}, {"_id": {"$gt": "d07"}}, {"_id": {"$gt": "d29"}}])
@pytest.mark.parametrize("limit", [1, 4, 100])
def test_one_pass_gives_the_separate_page_and_count(store, after, limit):
    query = {"_index.patient": "Patient/p1", **ACCESS}
    one_pass = store.find_and_count("DocumentReference", query, after, SORT, limit, {"resource": 1})
    assert one_pass == separately(store, query, after, limit)


def test_no_match_counts_zero(store):
    query = {"_index.patient": "Patient/nobody", **ACCESS}
    assert store.find_and_count("DocumentReference", query, {}, SORT, 5) == ([], 0)


def test_filtered_queries_take_one_pass_and_index_served_ones_do_not(store, registry):
    log = CallLog(store)
    fitted = IndexFittedStore(log, registry.index_fields)
    fitted.find_and_count("DocumentReference", {"_index.patient": "Patient/p1", **ACCESS}, {}, SORT, 5)
    assert log.calls == ["find_and_count"]
    log.calls.clear()
    page, total = fitted.find_and_count("DocumentReference", {"_index.patient": "Patient/p1"}, {}, SORT, 5)
    assert log.calls == ["find", "count"] and len(page) == 5 and total == 20


def test_a_result_too_large_for_one_document_falls_back(store, monkeypatch):
    real = pymongo.collection.Collection.aggregate

    def refusing(self, pipeline, *args, **kwargs):
        if any("$facet" in stage for stage in pipeline):
            raise OperationFailure("BSONObj size: 17544285 is invalid", code=10334)
        return real(self, pipeline, *args, **kwargs)

    monkeypatch.setattr(pymongo.collection.Collection, "aggregate", refusing)
    query = {"_index.patient": "Patient/p1", **ACCESS}
    after = {"_id": {"$gt": "d03"}}
    assert store.find_and_count("DocumentReference", query, after, SORT, 3, {"resource": 1}) == \
        separately(store, query, after, 3)


def test_other_database_errors_are_not_hidden(store, monkeypatch):
    def failing(self, pipeline, *args, **kwargs):
        raise OperationFailure("interrupted", code=11601)

    monkeypatch.setattr(pymongo.collection.Collection, "aggregate", failing)
    with pytest.raises(OperationFailure):
        store.find_and_count("DocumentReference", {"_index.patient": "Patient/p1", **ACCESS}, {}, SORT, 3)


@pytest.mark.parametrize("total", ["accurate", "estimate", "none"])
def test_filtered_search_pages_carry_the_filtered_total(store, registry, total):
    """Every page of a filtered search: full pages, no document twice, and (when asked) the
    number of visible matches, whichever way it was counted."""
    service = SearchService(registry, store)
    visible = {f"d{n:02d}" for n in range(30) if n % 3 and (n % 5 or n == 5)}
    params = [("patient", "p1"), ("_count", "3"), ("_total", total)]
    seen: list[str] = []
    while params:
        bundle = service.search("DocumentReference", params, base_url=BASE, extra_filter=ACCESS)
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        if total == "none":
            assert "total" not in bundle
        else:
            assert bundle["total"] == len(visible)
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        params = [tuple(p.split("=", 1)) for p in following[0].split("?", 1)[1].split("&")] if following else []
    assert sorted(seen) == sorted(visible) and len(seen) == len(set(seen))
