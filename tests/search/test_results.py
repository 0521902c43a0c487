"""Result shaping: _sort, keyset paging (also while data changes), _count, _total, _summary,
_elements, _include/_revinclude, warnings and strict handling, system-level search."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_server.engine.errors import FhirError
from fhir_server.search import SearchService
from tests.search.conftest import BASE, id_set, ids, put, stored_document


def immunization(ident: str, date: str, patient: str = "pat1", status: str = "completed") -> dict:
    return {"resourceType": "Immunization", "id": ident, "status": status, "occurrenceDateTime": date,
            "patient": {"reference": f"Patient/{patient}"}, "performer": [{"actor": {"reference": "Practitioner/dr"}}],
            "vaccineCode": {"coding": [{"system": "http://snomed.info/sct", "code": "871875004"}]}}


PATIENTS = [
    {"resourceType": "Patient", "id": "pat1", "gender": "female",
     "name": [{"family": "Dupont", "given": ["Zoé", "Anne"]}],
     "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Zoé</div>"},
     "generalPractitioner": [{"reference": "Practitioner/dr"}],
     "managingOrganization": {"reference": "Organization/org"}},
    {"resourceType": "Patient", "id": "pat2", "gender": "male", "name": [{"family": "Martin", "given": ["Bruno"]}]},
    {"resourceType": "Patient", "id": "pat3", "name": [{"family": "Petit", "given": ["Claire", "Yves"]}]},
    {"resourceType": "Patient", "id": "pat4", "name": [{"family": "Durand"}]},
]
OTHERS = [
    {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "House"}]},
    {"resourceType": "Organization", "id": "org", "name": "Cabinet"},
    {"resourceType": "Provenance", "id": "prov1", "target": [{"reference": "Immunization/i01"}],
     "recorded": "2024-01-01T00:00:00Z", "agent": [{"who": {"reference": "Practitioner/dr"}}]},
]
IMMUNIZATIONS = [immunization(f"i{n:02d}", f"2024-01-{n:02d}") for n in range(1, 13)] + \
    [immunization(f"t{n}", "2024-02-01", status="not-done" if n % 2 else "completed") for n in range(1, 6)]


@pytest.fixture(scope="module", autouse=True)
def data(store, registry) -> None:
    put(store, registry, *PATIENTS, *OTHERS, *IMMUNIZATIONS)


def search(service: SearchService, resource_type: str | None, params: list[tuple[str, str]], **kw) -> dict:
    return service.search(resource_type, params, base_url=BASE, **kw)


def link(bundle: dict, relation: str) -> list[tuple[str, str]] | None:
    for item in bundle["link"]:
        if item["relation"] == relation:
            return parse_qsl(urlsplit(item["url"]).query)
    return None


def walk(service: SearchService, resource_type: str, params: list[tuple[str, str]], between=None) -> list[str]:
    """All match ids page by page, following `next` links as a client would."""
    seen: list[str] = []
    bundle = search(service, resource_type, params)
    while True:
        seen += [i.split("/")[1] for i in ids(bundle)]
        following = link(bundle, "next")
        if following is None:
            return seen
        if between:
            between(seen)
        bundle = search(service, resource_type, following)


# -- sort ---------------------------------------------------------------------------------------

def test_sort_by_date_both_ways(service: SearchService) -> None:
    ascending = ids(search(service, "Immunization", [("_sort", "date,_id"), ("_count", "100")]))
    assert ascending[:3] == ["Immunization/i01", "Immunization/i02", "Immunization/i03"]
    assert ascending[-5:] == [f"Immunization/t{n}" for n in range(1, 6)]
    descending = ids(search(service, "Immunization", [("_sort", "-date"), ("_count", "100")]))
    assert descending[:5] == [f"Immunization/t{n}" for n in range(1, 6)]      # ties broken by id
    assert descending[-1] == "Immunization/i01"


def test_multi_key_sort(service: SearchService) -> None:
    result = ids(search(service, "Immunization", [("_sort", "status,-date"), ("_count", "100")]))
    # completed first (sorted by date, newest first), then not-done
    assert result[:2] == ["Immunization/t2", "Immunization/t4"]
    assert result[2:4] == ["Immunization/i12", "Immunization/i11"]
    assert result[-3:] == ["Immunization/t1", "Immunization/t3", "Immunization/t5"]


def test_sort_on_a_multi_valued_string(service: SearchService) -> None:
    # lowest given name ascending: Anne (pat1), Bruno, Claire, then no given name last... MongoDB puts
    # missing values first ascending
    assert ids(search(service, "Patient", [("_sort", "given")])) == \
        ["Patient/pat4", "Patient/pat1", "Patient/pat2", "Patient/pat3"]
    # highest given name descending: Zoé (pat1), Yves (pat3), Bruno, missing last
    assert ids(search(service, "Patient", [("_sort", "-given")])) == \
        ["Patient/pat1", "Patient/pat3", "Patient/pat2", "Patient/pat4"]


@pytest.mark.parametrize("sort", ["given", "-given", "family", "-_id", "gender,-family", "-_lastUpdated"])
def test_paging_one_by_one_gives_the_full_order(service: SearchService, sort: str) -> None:
    full = [i.split("/")[1] for i in ids(search(service, "Patient", [("_sort", sort)]))]
    assert walk(service, "Patient", [("_sort", sort), ("_count", "1")]) == full


def test_unknown_sort_parameter(service: SearchService) -> None:
    bundle = search(service, "Patient", [("_sort", "shoe-size")])
    assert len(ids(bundle)) == 4 and bundle["entry"][-1]["search"]["mode"] == "outcome"
    with pytest.raises(FhirError):
        search(service, "Patient", [("_sort", "shoe-size")], strict=True)


# -- paging -------------------------------------------------------------------------------------

def test_links_and_previous(service: SearchService) -> None:
    params = [("patient", "Patient/pat1"), ("_sort", "-date"), ("_count", "5"), ("_format", "json")]
    first = search(service, "Immunization", params)
    assert {item["relation"] for item in first["link"]} == {"self", "first", "next"}
    assert ("_format", "json") not in link(first, "self")
    second = search(service, "Immunization", link(first, "next"))
    third = search(service, "Immunization", link(second, "next"))
    assert len(ids(third)) == 5 and link(third, "next") is not None
    back = search(service, "Immunization", link(third, "previous"))
    assert ids(back) == ids(second)
    assert ids(search(service, "Immunization", link(back, "previous"))) == ids(first)
    assert link(search(service, "Immunization", link(back, "previous")), "previous") is None
    assert link(first, "first") == link(third, "first")


def test_paging_is_stable_while_data_changes(service: SearchService, store, registry) -> None:
    """Between pages: inserts before and after the cursor, deletes of seen and unseen resources.
    Every resource present for the whole walk comes exactly once; nothing is duplicated."""
    patient = "walker"
    initial = [immunization(f"w{n:02d}", f"2023-{1 + n % 9:02d}-1{n % 10}", patient) for n in range(30)]
    put(store, registry, *initial)
    query = [("patient", f"Patient/{patient}"), ("_sort", "date"), ("_count", "4")]
    order = [i.split("/")[1] for i in ids(search(service, "Immunization", [*query[:2], ("_count", "100")]))]
    deleted_unseen: set[str] = set()
    deleted_seen: set[str] = set()
    early: set[str] = set()
    late: set[str] = set()

    def change(seen_so_far: list[str]) -> None:
        number = len(early)
        before = immunization(f"e{number}", "2022-01-01", patient)      # sorts before the cursor
        after = immunization(f"z{number}", "2023-12-31", patient)       # sorts after everything
        put(store, registry, before, after)
        early.add(before["id"])
        late.add(after["id"])
        last = seen_so_far[-1]
        if last not in order:
            return
        ahead = [i for i in order[order.index(last) + 1:] if i not in deleted_unseen]
        for victim, bucket in ((last, deleted_seen), (ahead[1] if len(ahead) > 1 else None, deleted_unseen)):
            if victim and victim not in deleted_seen | deleted_unseen:
                store.remove("Immunization", victim, 1)
                bucket.add(victim)

    seen = walk(service, "Immunization", query, between=change)
    assert len(seen) == len(set(seen))
    assert {r["id"] for r in initial} - deleted_unseen <= set(seen)
    assert deleted_unseen and not deleted_unseen & set(seen)
    assert early and not early & set(seen)
    assert late <= set(seen)


MINE = ("patient", "pat1")


def test_counts(service: SearchService) -> None:
    assert len(ids(search(service, "Immunization", [MINE]))) == 17     # default page of 20
    assert len(ids(search(service, "Immunization", [MINE, ("_count", "3")]))) == 3
    only_total = search(service, "Immunization", [MINE, ("_count", "0")])
    assert only_total["total"] == 17 and only_total["entry"] == []
    with pytest.raises(FhirError):
        search(service, "Immunization", [("_count", "many")])


def test_totals(service: SearchService) -> None:
    assert "total" not in search(service, "Immunization", [MINE])
    assert search(service, "Immunization", [MINE, ("_total", "accurate"), ("_count", "2")])["total"] == 17
    assert search(service, "Immunization", [MINE, ("_total", "estimate"), ("status", "not-done")])["total"] == 3
    counted = search(service, "Immunization", [MINE, ("_summary", "count"), ("status", "completed")])
    assert counted["total"] == 14 and counted["entry"] == []
    with pytest.raises(FhirError):
        search(service, "Immunization", [("_total", "maybe")])


def test_extra_filter_applies_to_matches_totals_and_includes(service: SearchService) -> None:
    hide_dr = {"_id": {"$nin": ["dr", "i01"]}}
    bundle = search(service, "Immunization", [MINE, ("_total", "accurate"), ("_include", "Immunization:performer")],
                    extra_filter=hide_dr)
    assert bundle["total"] == 16
    assert "i01" not in id_set(bundle) and id_set(bundle, "include") == set()


# -- _summary / _elements -------------------------------------------------------------------------

def test_summary_and_elements(service: SearchService) -> None:
    summary = search(service, "Patient", [("_id", "pat1"), ("_summary", "true")])["entry"][0]["resource"]
    assert "name" in summary and "gender" in summary and "text" not in summary
    assert "generalPractitioner" not in summary
    assert {"code": "SUBSETTED"}.items() <= summary["meta"]["tag"][0].items()
    data = search(service, "Patient", [("_id", "pat1"), ("_summary", "data")])["entry"][0]["resource"]
    assert "text" not in data and "generalPractitioner" in data
    text = search(service, "Patient", [("_id", "pat1"), ("_summary", "text")])["entry"][0]["resource"]
    assert set(text) == {"resourceType", "id", "meta", "text"}
    elements = search(service, "Patient", [("_id", "pat1"), ("_elements", "gender,birthDate")])["entry"][0]["resource"]
    assert set(elements) == {"resourceType", "id", "meta", "gender"}
    full = search(service, "Patient", [("_id", "pat1")])["entry"][0]["resource"]
    assert "meta" not in full and "generalPractitioner" in full


# -- _include / _revinclude -----------------------------------------------------------------------

def test_include(service: SearchService) -> None:
    bundle = search(service, "Patient", [("_id", "pat1"), ("_include", "Patient:general-practitioner")])
    assert ids(bundle, "include") == ["Practitioner/dr"]
    typed = search(service, "Patient", [("_id", "pat1"), ("_include", "Patient:general-practitioner:Organization")])
    assert ids(typed, "include") == []
    everything = search(service, "Patient", [("_id", "pat1"), ("_include", "*")])
    assert set(ids(everything, "include")) == {"Practitioner/dr", "Organization/org"}


def test_revinclude_and_iterate(service: SearchService) -> None:
    bundle = search(service, "Patient", [("_id", "pat1"), ("_revinclude", "Immunization:patient"), ("_count", "1")])
    assert len(ids(bundle, "include")) == 17
    iterated = search(service, "Patient", [("_id", "pat1"), ("_revinclude", "Immunization:patient"),
                                           ("_revinclude:iterate", "Provenance:target")])
    assert "Provenance/prov1" in ids(iterated, "include")
    not_iterated = search(service, "Patient", [("_id", "pat1"), ("_revinclude", "Immunization:patient"),
                                               ("_revinclude", "Provenance:target")])
    assert "Provenance/prov1" not in ids(not_iterated, "include")
    chained = search(service, "Immunization", [("_id", "i01"), ("_include", "Immunization:patient"),
                                               ("_include:iterate", "Patient:organization")])
    assert set(ids(chained, "include")) == {"Patient/pat1", "Organization/org"}
    star = search(service, "Practitioner", [("_id", "dr"), ("_revinclude", "*")])
    assert {"Patient/pat1", "Provenance/prov1", "Immunization/i01"} <= set(ids(star, "include"))


def test_include_is_batched(service: SearchService, store) -> None:
    """No query per result: the included practitioners of 17 immunizations cost one query."""
    calls = []
    original = store.find

    def counting(resource_type, *args, **kwargs):
        calls.append(resource_type)
        return original(resource_type, *args, **kwargs)

    store.find = counting
    try:
        search(service, "Immunization", [("_include", "Immunization:performer"), ("_include", "Immunization:patient")])
    finally:
        del store.find
    assert calls.count("Practitioner") == 1 and calls.count("Patient") == 1


# -- unknown parameters, system level ------------------------------------------------------------

def test_unknown_parameters(service: SearchService) -> None:
    bundle = search(service, "Patient", [("shoe-size", "42"), ("organization:above", "Organization/org"),
                                         ("_pretty", "true")])
    assert len(ids(bundle)) == 4
    outcome = bundle["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert [i["expression"] for i in outcome["resource"]["issue"]] == [["shoe-size"], ["organization:above"]]
    for params in ([("shoe-size", "42")], [("organization:above", "Organization/org")], [("_contained", "maybe")],
                   [("_containedType", "both")]):
        with pytest.raises(FhirError) as caught:
            search(service, "Patient", params, strict=True)
        assert caught.value.status == 400


@pytest.mark.parametrize(("name", "value", "why"), [
    ("_include", "Patient:shoe-size", "no reference search parameter shoe-size"),
    ("_include", "Patient:gender", "no reference search parameter gender"),          # a token, not a reference
    ("_include", "Chaussure:organization", "Chaussure is not a resource type"),
    ("_include", "Patient:organization:Practitioner", "does not refer to Practitioner"),
    ("_revinclude", "Observation:shoe-size", "no reference search parameter shoe-size"),
])
def test_an_include_that_names_nothing_is_reported(service: SearchService, name: str, value: str, why: str) -> None:
    """It would silently include nothing: a warning in the bundle, or 400 under strict handling."""
    bundle = search(service, "Patient", [(name, value)])
    outcome = bundle["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert why in outcome["resource"]["issue"][0]["diagnostics"]
    assert outcome["resource"]["issue"][0]["expression"] == [name]
    with pytest.raises(FhirError) as caught:
        search(service, "Patient", [(name, value)], strict=True)
    assert caught.value.status == 400


def test_system_level_search(service: SearchService) -> None:
    bundle = search(service, None, [("_type", "Patient,Practitioner"), ("_sort", "_id"), ("_count", "3"),
                                    ("_total", "accurate")])
    assert bundle["total"] == 5
    assert ids(bundle) == ["Practitioner/dr", "Patient/pat1", "Patient/pat2"]
    rest = search(service, None, link(bundle, "next"))
    assert ids(rest) == ["Patient/pat3", "Patient/pat4"]
    assert search(service, None, [("_type", "Patient,Organization"), ("_id", "org")])["entry"][0]["fullUrl"] == \
        f"{BASE}/Organization/org"
    with pytest.raises(FhirError):
        search(service, None, [("name", "x")])


def test_same_id_in_two_types_pages_correctly(service: SearchService, store, registry) -> None:
    put(store, registry, {"resourceType": "Organization", "id": "pat1", "name": "Homonyme"})
    everything = [i for i in ids(search(service, None, [("_type", "Patient,Organization"), ("_sort", "_id"),
                                                      ("_count", "50")]))]
    one_by_one = walk(service, None, [("_type", "Patient,Organization"), ("_sort", "_id"), ("_count", "1")])
    assert [i.split("/")[1] for i in everything] == one_by_one
    assert everything.index("Organization/pat1") + 1 == everything.index("Patient/pat1")


def test_stored_document_shape(registry) -> None:
    document = stored_document(registry, PATIENTS[0])
    assert document["_id"] == "pat1" and document["_index"]["family"] == ["dupont"]


def test_extra_filter_per_resource_type(service: SearchService) -> None:
    """Access rules differ by type: a function gives the filter of each collection queried."""
    def access(resource_type: str) -> dict | None:
        return {"_id": {"$ne": "dr"}} if resource_type == "Practitioner" else None

    bundle = search(service, "Patient", [("_id", "pat1"), ("_include", "Patient:general-practitioner"),
                                         ("_include", "Patient:organization")], extra_filter=access)
    assert ids(bundle, "include") == ["Organization/org"]
    chained = search(service, "Patient", [("general-practitioner.family", "house")], extra_filter=access)
    assert ids(chained) == []
