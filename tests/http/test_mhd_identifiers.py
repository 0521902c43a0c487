"""The ids of shared entries: each document entry, submission set and folder carries an entryUUID
(assigned by the server when the source leaves it out, never shared, never changed), and a
masterIdentifier names one document only, even when two submissions race."""

from __future__ import annotations

import re
import threading

import pytest

from fhir_server.mhd.lifecycle import DocumentLifecycle
from tests.http.test_mhd_publish import professional_publication, publish
from tests.http.test_mhd_support import (
    CR,
    IMAGERIE,
    PATIENT_ID,
    RFC3986,
    diagnostics,
    entry_of,
    example,
    expressions,
    fresh,
    index_of,
    load_patients,
    pdf,
    provide,
    provided_document,
)

ENTRY_UUID = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
OFFICIAL_UUID = "urn:uuid:5c1d7c3e-8a51-4f0e-9d3b-6e2f1a7b9c01"


@pytest.fixture(scope="module", autouse=True)
def patients(client):
    load_patients(client)


def entry_uuids(resource: dict) -> list[str]:
    return [i["value"] for i in resource.get("identifier", []) if i.get("use") == "official"]


def stored(client, response, resource_type: str) -> list[dict]:
    assert response.status_code == 200, response.text
    locations = [e["response"]["location"].split("/_history")[0] for e in response.json()["entry"]]
    return [client.get(f"/fhir/{location}").json() for location in locations if location.startswith(resource_type)]


def count(client, resource_type: str, **params: str) -> int:
    if resource_type == "DocumentReference":           # an ITI-67 search names the patient and the status
        params = {"patient": PATIENT_ID, "status": "current,superseded", **params}
    answer = client.get(f"/fhir/{resource_type}", params={**params, "_summary": "count", "_total": "accurate"})
    assert answer.status_code == 200, answer.text
    return answer.json()["total"]


# -- entryUUID ---------------------------------------------------------------------------------------------
def test_server_assigns_entry_uuids(client):
    response = provide(client, fresh(example(IMAGERIE)))       # a document, a submission set and a folder
    resources = stored(client, response, "DocumentReference") + stored(client, response, "List")
    assert len(resources) == 3
    values = [v for r in resources for v in entry_uuids(r)]
    assert len(values) == 3 and len(set(values)) == 3
    assert all(ENTRY_UUID.match(v) for v in values)
    identifier = next(i for i in resources[0]["identifier"] if i["use"] == "official")
    assert identifier["system"] == RFC3986 and identifier["type"]["coding"][0]["code"] == "entryUUID"
    # what the server assigned is searchable
    document = resources[0]
    found = client.get("/fhir/DocumentReference", params={"patient": document["subject"]["reference"],
                                                           "status": "current",
                                                           "identifier": f"{RFC3986}|{entry_uuids(document)[0]}"})
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [document["id"]]


def test_source_entry_uuid_is_kept(client):
    bundle = fresh(example(CR))
    document = entry_of(bundle, "DocumentReference")["resource"]
    document["identifier"] = [{"use": "official", "system": RFC3986, "value": OFFICIAL_UUID}]
    assert entry_uuids(provided_document(client, bundle)) == [OFFICIAL_UUID]


def test_simplified_publish_gets_entry_uuids(client):
    response = publish(client, professional_publication(pdf("Compte rendu")))
    assert response.status_code == 201, response.text
    document = response.json()
    assert ENTRY_UUID.match(entry_uuids(document)[0])
    lists = client.get("/fhir/List", params={"item": f"DocumentReference/{document['id']}"}).json()["entry"]
    assert ENTRY_UUID.match(entry_uuids(lists[0]["resource"])[0])


def test_entry_uuid_of_a_stored_entry_is_refused(client):
    used = entry_uuids(provided_document(client, fresh(example(CR))))[0]
    bundle = fresh(example(CR))
    entry_of(bundle, "DocumentReference")["resource"]["identifier"] = [
        {"use": "official", "system": RFC3986, "value": used}]
    before = count(client, "DocumentReference")
    response = provide(client, bundle)
    assert response.status_code == 409, response.text
    assert expressions(response.json()) == [f"Bundle.entry[{index_of(bundle, 'DocumentReference')}].resource"
                                            ".identifier[0]"]
    assert count(client, "DocumentReference") == before


def test_entry_uuid_twice_in_one_bundle_is_refused(client):
    bundle = fresh(example(IMAGERIE))
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] in ("DocumentReference", "List"):
            entry["resource"]["identifier"] = [*entry["resource"].get("identifier", []),
                                               {"use": "official", "system": RFC3986, "value": OFFICIAL_UUID}]
    response = provide(client, bundle)
    assert response.status_code == 422
    assert len(expressions(response.json())) == 2            # the second and the third entry
    assert "entryUUID" in diagnostics(response.json())


def test_malformed_entry_uuid_is_refused(client):
    bundle = fresh(example(CR))
    entry_of(bundle, "DocumentReference")["resource"]["identifier"] = [
        {"use": "official", "system": RFC3986, "value": "urn:oid:1.2.250.1.999.1.7"}]
    response = provide(client, bundle)
    assert response.status_code == 422
    assert expressions(response.json()) == [f"Bundle.entry[{index_of(bundle, 'DocumentReference')}].resource"
                                            ".identifier[0]"]


def test_entry_uuid_never_changes(client):
    response = provide(client, fresh(example(IMAGERIE)))
    folder = next(r for r in stored(client, response, "List") if r["code"]["coding"][0]["code"] == "folder")
    changed = {**folder, "identifier": [i for i in folder["identifier"] if i.get("use") != "official"]}
    response = client.put(f"/fhir/List/{folder['id']}", json=changed)
    assert response.status_code == 422
    assert "never changes" in diagnostics(response.json())


# -- masterIdentifier: one document, even when submissions race -------------------------------------------
def same_document_twice() -> tuple[dict, dict]:
    first, second = fresh(example(CR)), fresh(example(CR))
    entry_of(second, "DocumentReference")["resource"]["masterIdentifier"] = \
        entry_of(first, "DocumentReference")["resource"]["masterIdentifier"]
    return first, second


def documents_named(client, bundle: dict) -> int:
    unique = entry_of(bundle, "DocumentReference")["resource"]["masterIdentifier"]["value"]
    return count(client, "DocumentReference", identifier=f"{RFC3986}|{unique}")


def test_duplicate_is_refused_by_the_database_when_the_early_check_saw_nothing(client, monkeypatch):
    """Two submissions that both passed the search for a duplicate before either was stored: the
    claim made inside the second one's transaction refuses it."""
    monkeypatch.setattr(DocumentLifecycle, "_check_unique_master_identifier", lambda self, event: None)
    first, second = same_document_twice()
    assert provide(client, first).status_code == 200
    lists_before = count(client, "List")
    response = provide(client, second)
    assert response.status_code == 409, response.text
    where = f"Bundle.entry[{index_of(second, 'DocumentReference')}]"
    assert expressions(response.json()) == [f"{where}.resource.masterIdentifier"]
    assert diagnostics(response.json()).startswith(where)
    assert documents_named(client, first) == 1 and count(client, "List") == lists_before


def test_concurrent_submissions_of_one_document(client):
    bundles = same_document_twice() + same_document_twice()[1:]
    for bundle in bundles[1:]:
        entry_of(bundle, "DocumentReference")["resource"]["masterIdentifier"] = \
            entry_of(bundles[0], "DocumentReference")["resource"]["masterIdentifier"]
    start = threading.Barrier(len(bundles))
    statuses: list[int] = []

    def submit(bundle: dict) -> None:
        start.wait(timeout=30)
        statuses.append(provide(client, bundle).status_code)

    threads = [threading.Thread(target=submit, args=(b,)) for b in bundles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(statuses) == [200, 409, 409]
    assert documents_named(client, bundles[0]) == 1


def test_deleted_document_releases_its_master_identifier(client):
    first, second = same_document_twice()
    document = provided_document(client, first)
    assert client.delete(f"/fhir/DocumentReference/{document['id']}").status_code == 200
    assert provide(client, second).status_code == 200
    assert documents_named(client, first) == 1
