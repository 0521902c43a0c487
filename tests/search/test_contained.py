"""`_contained` and `_containedType`: contained resources are searched with their own type's
parameters, found in whichever collections hold them, returned as entries of their own (or their
containers), paged, counted, and seen only through their container's access filter."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_server.engine.errors import FhirError
from fhir_server.search import SearchService
from fhir_server.search.contained import Mark
from tests.search.conftest import BASE, ids, put

LOINC = "http://loinc.org"
SYSTOLIC, DIASTOLIC = f"{LOINC}|8480-6", f"{LOINC}|8462-4"


def observation(ident: str, code: str, status: str = "final", subject: str | None = None) -> dict:
    system, value = code.split("|")
    resource = {"resourceType": "Observation", "id": ident, "status": status,
                "code": {"coding": [{"system": system, "code": value}]}}
    if subject:
        resource["subject"] = {"reference": subject}
    return resource


def report(ident: str, *contained: dict, updated: str = "2024-01-01T00:00:00Z") -> dict:
    return {"resourceType": "DiagnosticReport", "id": ident, "status": "final", "meta": {"lastUpdated": updated},
            "code": {"text": "Bilan"}, "subject": {"reference": "Patient/p1"},
            "result": [{"reference": f"#{c['id']}"} for c in contained], "contained": list(contained)}


OLD = {"lastUpdated": "2024-02-01T00:00:00Z"}
RESOURCES = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "Martin"}]},
    # two contained Observations in one container, and the same contained id in two containers
    report("r1", observation("o1", SYSTOLIC, subject="Patient/p1"), observation("o2", DIASTOLIC, "preliminary"),
           updated="2024-01-01T00:00:00Z"),
    report("r2", observation("o1", SYSTOLIC, "amended"), updated="2024-06-01T00:00:00Z"),
    {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order", "meta": OLD,
     "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": "#m1"},
     "supportingInformation": [{"reference": "#ob"}],
     "contained": [{"resourceType": "Medication", "id": "m1",
                    "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "N02BE01"}]}},
                   observation("ob", SYSTOLIC)]},
    # an Observation containing an Observation, and one on its own
    {**observation("ocont", f"{LOINC}|85354-9"), "meta": OLD, "hasMember": [{"reference": "#inner"}],
     "contained": [observation("inner", SYSTOLIC)]},
    observation("top", SYSTOLIC),
    # a container of nothing searchable (no id): never a result
    {"resourceType": "DiagnosticReport", "id": "r3", "status": "final", "code": {"text": "x"},
     "contained": [{"resourceType": "Observation", "status": "final", "code": {"text": "sans id"}}]},
]

SYSTOLIC_CONTAINED = ["DiagnosticReport/r1#o1", "DiagnosticReport/r2#o1", "MedicationRequest/mr1#ob",
                      "Observation/ocont#inner"]


@pytest.fixture(scope="module", autouse=True)
def data(store, registry) -> None:
    put(store, registry, *RESOURCES)


def search(service: SearchService, resource_type: str | None, query: str, **kw) -> dict:
    params = [tuple(p.split("=", 1)) for p in query.split("&")] if query else []
    return service.search(resource_type, params, base_url=BASE, **kw)


def full_urls(bundle: dict, mode: str = "match") -> list[str]:
    return [e["fullUrl"].removeprefix(BASE + "/") for e in bundle["entry"] if e["search"]["mode"] == mode]


def following(bundle: dict, relation: str = "next") -> list[tuple[str, str]] | None:
    return next((parse_qsl(urlsplit(link["url"]).query) for link in bundle["link"] if link["relation"] == relation),
                None)


@pytest.mark.parametrize(("query", "expected"), [
    (f"_contained=true&code={SYSTOLIC}", SYSTOLIC_CONTAINED),
    ("_contained=true&code=8480-6", SYSTOLIC_CONTAINED),
    ("_contained=true&status=preliminary", ["DiagnosticReport/r1#o2"]),
    # r1 holds a systolic one and a preliminary one, but no single Observation is both
    (f"_contained=true&code={SYSTOLIC}&status=preliminary", []),
    (f"_contained=true&code={SYSTOLIC}&status=amended", ["DiagnosticReport/r2#o1"]),
    ("_contained=true&_id=o1", ["DiagnosticReport/r1#o1", "DiagnosticReport/r2#o1"]),
    ("_contained=true&subject=Patient/p1", ["DiagnosticReport/r1#o1"]),
    ("_contained=true&code:missing=true", []),
    # a criterion on the container's own fields selects containers
    (f"_contained=true&code={SYSTOLIC}&_lastUpdated=ge2024-03-01", ["DiagnosticReport/r2#o1"]),
    ("_contained=true", ["DiagnosticReport/r1#o1", "DiagnosticReport/r1#o2", "DiagnosticReport/r2#o1",
                         "MedicationRequest/mr1#ob", "Observation/ocont#inner"]),
    (f"_contained=true&_containedType=contained&code={SYSTOLIC}", SYSTOLIC_CONTAINED),
    (f"_contained=true&_containedType=container&code={SYSTOLIC}",
     ["DiagnosticReport/r1", "DiagnosticReport/r2", "MedicationRequest/mr1", "Observation/ocont"]),
    (f"_contained=both&code={SYSTOLIC}", ["Observation/top", *SYSTOLIC_CONTAINED]),
    (f"_contained=both&_containedType=container&code={SYSTOLIC}",
     ["DiagnosticReport/r1", "DiagnosticReport/r2", "MedicationRequest/mr1", "Observation/ocont",
      "Observation/top"]),
    (f"_contained=false&code={SYSTOLIC}", ["Observation/top"]),
    (f"code={SYSTOLIC}", ["Observation/top"]),
])
def test_contained_observations(service: SearchService, query: str, expected: list[str]) -> None:
    assert full_urls(search(service, "Observation", query, strict=True)) == expected


def test_contained_results_are_the_contained_resources(service: SearchService) -> None:
    bundle = search(service, "Observation", "_contained=true&status=preliminary&_total=accurate")
    assert bundle["total"] == 1
    assert bundle["entry"][0]["resource"] == observation("o2", DIASTOLIC, "preliminary")
    assert bundle["entry"][0]["fullUrl"] == f"{BASE}/DiagnosticReport/r1#o2"


def test_other_contained_types(service: SearchService) -> None:
    bundle = search(service, "Medication", "_contained=true&code=http://www.whocc.no/atc|N02BE01", strict=True)
    assert full_urls(bundle) == ["MedicationRequest/mr1#m1"]
    assert ids(bundle) == ["Medication/m1"]
    assert full_urls(search(service, "Patient", "_contained=true", strict=True)) == []


@pytest.mark.parametrize("query", ["_contained=true", f"_contained=both&code={SYSTOLIC}",
                                   f"_contained=true&_containedType=container&code={SYSTOLIC}"])
def test_paging_one_by_one_gives_every_result_once(service: SearchService, query: str) -> None:
    whole = search(service, "Observation", f"{query}&_total=accurate&_count=100")
    expected = full_urls(whole)
    assert whole["total"] == len(expected)
    seen: list[str] = []
    bundle = search(service, "Observation", f"{query}&_count=1")
    while True:
        seen += full_urls(bundle)
        params = following(bundle)
        if params is None:
            break
        assert ("_contained", query.split("&")[0].split("=")[1]) in params
        bundle = service.search("Observation", params, base_url=BASE)
    assert seen == expected


@pytest.mark.parametrize("query", ["_contained=true", f"_contained=both&code={SYSTOLIC}",
                                   f"_contained=true&_containedType=container&code={SYSTOLIC}"])
def test_previous_links_page_back_to_the_first_result(service: SearchService, query: str) -> None:
    """Like other searches: every page reached by a cursor links to the one before it, and paging
    back from the last page gives the same pages as paging forward, in the same order."""
    forward: list[list[str]] = []
    bundle = search(service, "Observation", f"{query}&_count=2")
    assert following(bundle, "previous") is None                # the first page has nothing before it
    while True:
        forward.append(full_urls(bundle))
        params = following(bundle)
        if params is None:
            break
        bundle = service.search("Observation", params, base_url=BASE)
    assert len(forward) >= 2
    backward: list[list[str]] = [full_urls(bundle)]
    while (params := following(bundle, "previous")) is not None:
        bundle = service.search("Observation", params, base_url=BASE)
        backward.append(full_urls(bundle))
        assert following(bundle) is not None                     # and each of them links forward again
    assert backward[::-1] == forward


def test_cursors_written_before_previous_links_still_page_forward(service: SearchService) -> None:
    first = search(service, "Observation", "_contained=true&_count=2")
    old_style = Mark((1, "DiagnosticReport"), "r1", "o2")        # four fields, no direction
    raw = base64.urlsafe_b64encode(json.dumps([1, "DiagnosticReport", "r1", "o2"]).encode()).decode().rstrip("=")
    assert Mark.decode(raw) == old_style
    bundle = search(service, "Observation", f"_contained=true&_count=2&_cursor={raw}")
    assert full_urls(bundle) == full_urls(service.search("Observation", following(first), base_url=BASE))


def test_total_counts_contained_resources(service: SearchService) -> None:
    assert search(service, "Observation", "_contained=true&_summary=count")["total"] == 5
    assert search(service, "Observation", "_contained=true&_containedType=container&_total=accurate")["total"] == 4
    assert search(service, "Observation", f"_contained=both&code={SYSTOLIC}&_count=0")["total"] == 5


def test_the_container_access_filter_applies(service: SearchService) -> None:
    """Access rules are written for containers: whoever may not see r1 sees nothing it contains,
    in the results and in the totals."""
    def access(resource_type: str) -> dict | None:
        return {"_id": {"$ne": "r1"}} if resource_type == "DiagnosticReport" else None

    bundle = search(service, "Observation", f"_contained=true&code={SYSTOLIC}&_total=accurate", extra_filter=access)
    assert full_urls(bundle) == [u for u in SYSTOLIC_CONTAINED if not u.startswith("DiagnosticReport/r1")]
    assert bundle["total"] == 3
    hidden_everywhere = {"_id": {"$in": []}}
    assert search(service, "Observation", "_contained=both&_total=accurate", extra_filter=hidden_everywhere)[
        "total"] == 0


def test_includes_follow_the_contained_resources_references(service: SearchService) -> None:
    bundle = search(service, "Observation", f"_contained=true&_id=o1&code={SYSTOLIC}&_include=Observation:subject")
    assert full_urls(bundle) == ["DiagnosticReport/r1#o1", "DiagnosticReport/r2#o1"]
    assert ids(bundle, "include") == ["Patient/p1"]


def test_the_default_search_is_unchanged(service: SearchService, store) -> None:
    """`_contained=false` sends exactly the query of a search without it: no cost for containers."""
    sent: list[tuple[str, dict]] = []
    original = store.find

    def recording(resource_type, query, *args, **kwargs):
        sent.append((resource_type, query))
        return original(resource_type, query, *args, **kwargs)

    store.find = recording
    try:
        search(service, "Observation", f"code={SYSTOLIC}")
        plain = list(sent)
        sent.clear()
        search(service, "Observation", f"code={SYSTOLIC}&_contained=false")
    finally:
        del store.find
    assert sent == plain == [("Observation", {"_index.code": SYSTOLIC})]


@pytest.mark.parametrize(("resource_type", "query", "expression"), [
    ("Observation", "_contained=true&_sort=date", "_sort"),
    (None, "_type=Observation&_contained=true", "_contained"),
    ("Observation", "_contained=true&_has:Observation:has-member:code=8480-6", "_has:Observation:has-member:code"),
])
def test_what_does_not_apply_to_contained_resources(service: SearchService, resource_type: str | None, query: str,
                                                    expression: str) -> None:
    bundle = search(service, resource_type, query)
    outcome = bundle["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert [expression] in [issue["expression"] for issue in outcome["resource"]["issue"]]
    with pytest.raises(FhirError) as caught:
        search(service, resource_type, query, strict=True)
    assert caught.value.status == 400 and caught.value.issues[0].expression == (expression,)


def test_a_bad_cursor_is_400(service: SearchService) -> None:
    with pytest.raises(FhirError) as caught:
        search(service, "Observation", "_contained=true&_cursor=bm90IGEgY3Vyc29y")
    assert caught.value.status == 400 and caught.value.issues[0].expression == ("_cursor",)


def test_contained_resources_are_indexed_with_their_own_parameters(registry) -> None:
    index = registry.extract_index(RESOURCES[1])
    assert index["_contained"] == [
        {"_type": "Observation", "_id": "o1", "status": "final", "code": ["8480-6", SYSTOLIC],
         "combo-code": ["8480-6", SYSTOLIC], "subject": "Patient/p1", "patient": "Patient/p1"},
        {"_type": "Observation", "_id": "o2", "status": "preliminary", "code": ["8462-4", DIASTOLIC],
         "combo-code": ["8462-4", DIASTOLIC]},
    ]
    assert "_contained" not in registry.extract_index(RESOURCES[0])
