"""Patient compartment search, Patient/$everything, conditional matching, run-time
SearchParameters with reindexing."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_server.engine.errors import FhirError
from fhir_server.search import SearchRegistry, SearchService
from tests.search.conftest import BASE, id_set, ids, put

INS = "urn:oid:1.2.250.1.213.1.4.8"

RESOURCES = [
    {"resourceType": "Patient", "id": "alice", "identifier": [{"system": INS, "value": "2800575123456"}],
     "name": [{"family": "Martin"}], "managingOrganization": {"reference": "Organization/cab"},
     "meta": {"lastUpdated": "2024-01-01T00:00:00Z"}},
    {"resourceType": "Patient", "id": "bob", "identifier": [{"system": INS, "value": "1750000000000"}],
     "name": [{"family": "Martin"}], "meta": {"lastUpdated": "2024-01-01T00:00:00Z"}},
    {"resourceType": "Organization", "id": "cab", "name": "Cabinet"},
    {"resourceType": "Practitioner", "id": "drx", "name": [{"family": "Watson"}]},
    {"resourceType": "Medication", "id": "med", "code": {"text": "Paracétamol"}},
    # alice is the subject of d1 and the author of d2 (a patient-written note about bob)
    {"resourceType": "DocumentReference", "id": "d1", "status": "current", "subject": {"reference": "Patient/alice"},
     "author": [{"reference": "Practitioner/drx"}], "content": [{"attachment": {"url": "Binary/1"}}],
     "meta": {"lastUpdated": "2024-03-01T00:00:00Z"}},
    {"resourceType": "DocumentReference", "id": "d2", "status": "current", "subject": {"reference": "Patient/bob"},
     "author": [{"reference": "Patient/alice"}], "content": [{"attachment": {"url": "Binary/2"}}],
     "meta": {"lastUpdated": "2024-03-01T00:00:00Z"}},
    {"resourceType": "Immunization", "id": "i1", "status": "completed", "patient": {"reference": "Patient/alice"},
     "occurrenceDateTime": "2024-02-01", "vaccineCode": {"text": "DTP"},
     "meta": {"lastUpdated": "2024-02-01T00:00:00Z"}},
    {"resourceType": "Immunization", "id": "i2", "status": "completed", "patient": {"reference": "Patient/bob"},
     "occurrenceDateTime": "2024-02-01", "vaccineCode": {"text": "DTP"}},
    {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
     "subject": {"reference": "Patient/alice"}, "medicationReference": {"reference": "Medication/med"},
     "requester": {"reference": "Practitioner/drx"}, "meta": {"lastUpdated": "2024-04-01T00:00:00Z"}},
    {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "poids"},
     "subject": {"reference": "Patient/alice"}, "performer": [{"reference": "Patient/alice"}],
     "meta": {"lastUpdated": "2024-05-01T00:00:00Z"}},
]


@pytest.fixture(scope="module", autouse=True)
def data(store, registry) -> None:
    put(store, registry, *RESOURCES)


def test_compartment_search(service: SearchService) -> None:
    documents = service.search("DocumentReference", [], base_url=BASE, compartment=("Patient", "alice"))
    assert id_set(documents) == {"d1", "d2"}          # subject or author
    current = service.search("DocumentReference", [("_id", "d2")], base_url=BASE, compartment=("Patient", "alice"))
    assert id_set(current) == {"d2"}
    assert id_set(service.search("Immunization", [], base_url=BASE, compartment=("Patient", "alice"))) == {"i1"}
    # found through two links (subject and performer) but listed once
    assert ids(service.search("Observation", [], base_url=BASE, compartment=("Patient", "alice"))) == ["Observation/o1"]
    assert id_set(service.search("Patient", [], base_url=BASE, compartment=("Patient", "alice"))) == {"alice"}
    assert id_set(service.search("Organization", [], base_url=BASE, compartment=("Patient", "alice"))) == set()
    everything = service.search(None, [("_count", "50")], base_url=BASE, compartment=("Patient", "alice"))
    assert id_set(everything) == {"alice", "d1", "d2", "i1", "mr1", "o1"}


def test_compartment_links_page_through(service: SearchService) -> None:
    bundle = service.search("DocumentReference", [("_count", "1")], base_url=BASE, compartment=("Patient", "alice"))
    next_url = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    assert urlsplit(next_url).path.endswith("/Patient/alice/DocumentReference")
    rest = service.search("DocumentReference", parse_qsl(urlsplit(next_url).query), base_url=BASE,
                          compartment=("Patient", "alice"))
    assert ids(bundle) + ids(rest) == ["DocumentReference/d1", "DocumentReference/d2"]


def test_everything(service: SearchService) -> None:
    bundle = service.everything("alice", [], base_url=BASE)
    assert id_set(bundle) == {"alice", "d1", "d2", "i1", "mr1", "o1"}
    # referenced resources outside the compartment come as includes
    assert set(ids(bundle, "include")) == {"Organization/cab", "Practitioner/drx", "Medication/med"}
    since = service.everything("alice", [("_since", "2024-03-15T00:00:00Z")], base_url=BASE)
    assert id_set(since) == {"mr1", "o1"}
    typed = service.everything("alice", [("_type", "Immunization,Observation")], base_url=BASE)
    assert id_set(typed) == {"i1", "o1"}


def test_everything_pages(service: SearchService) -> None:
    seen: list[str] = []
    params = [("_count", "2")]
    while True:
        bundle = service.everything("alice", params, base_url=BASE)
        seen += ids(bundle)
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            break
        params = parse_qsl(urlsplit(following[0]).query)
    assert seen == ["Patient/alice", "DocumentReference/d1", "DocumentReference/d2", "Immunization/i1",
                    "MedicationRequest/mr1", "Observation/o1"]


def test_everything_respects_the_access_filter(service: SearchService) -> None:
    hidden = service.everything("alice", [], base_url=BASE, extra_filter={"_id": {"$ne": "d1"}})
    assert "d1" not in id_set(hidden)
    with pytest.raises(FhirError) as caught:
        service.everything("alice", [], base_url=BASE, extra_filter={"_id": {"$ne": "alice"}})
    assert caught.value.status == 404
    with pytest.raises(FhirError):
        service.everything("nobody", [], base_url=BASE)


def test_matching_ids(service: SearchService) -> None:
    assert service.matching_ids("Patient", [("identifier", f"{INS}|2800575123456")]) == ["alice"]
    assert service.matching_ids("Patient", [("family", "martin")]) == ["alice", "bob"]
    assert service.matching_ids("Patient", [("family", "martin")], limit=1) == ["alice"]
    assert service.matching_ids("Patient", [("family", "durand")]) == []
    for params in ([("shoe", "42")], [], [("_count", "1")]):
        with pytest.raises(FhirError) as caught:
            service.matching_ids("Patient", params)
        assert caught.value.status == 400


def test_custom_search_parameter_and_reindex(service: SearchService, registry: SearchRegistry, store) -> None:
    # a registry of its own: the session registry is shared with the other test modules
    local = SearchRegistry(registry.definitions)
    local_service = SearchService(local, store)
    nickname = {"resourceType": "SearchParameter", "url": "https://espace.example/SearchParameter/vaccine-text",
                "name": "vaccine-text", "status": "active", "code": "vaccine-text", "base": ["Immunization"],
                "type": "string", "expression": "Immunization.vaccineCode.text", "description": "Vaccine as written"}
    bundle = local_service.search("Immunization", [("vaccine-text", "dtp")], base_url=BASE)
    assert bundle["entry"][-1]["search"]["mode"] == "outcome"          # unknown yet
    assert local.register(nickname) == ["Immunization"]
    assert id_set(local_service.search("Immunization", [("vaccine-text", "dtp")], base_url=BASE)) == set()
    assert local_service.reindex(["Immunization"]) == 2
    assert id_set(local_service.search("Immunization", [("vaccine-text", "dtp")], base_url=BASE)) == {"i1", "i2"}
    assert local_service.reindex(["Immunization"]) == 0               # nothing left to change


@pytest.mark.parametrize("change", [
    {"expression": "Immunization.vaccineCode.txt"},        # no such element
    {"expression": "Immunization.where("},                  # not FHIRPath
    {"type": "special"},
    {"base": ["Banana"]},
    {"code": "_id"},
    {"code": "bad code"},
])
def test_invalid_custom_search_parameters(registry: SearchRegistry, change: dict) -> None:
    local = SearchRegistry(registry.definitions)
    definition = {"resourceType": "SearchParameter", "url": "https://espace.example/SearchParameter/x",
                  "status": "active", "code": "x", "base": ["Immunization"], "type": "string",
                  "expression": "Immunization.vaccineCode.text", **change}
    with pytest.raises(FhirError) as caught:
        local.register(definition)
    assert caught.value.status == 400
    assert local.param("Immunization", "x") is None
