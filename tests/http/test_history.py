"""history at instance, type and system level, with _since, _at, _count and paging."""

from __future__ import annotations

import time

import pytest

from tests.http.conftest import patient


def test_instance_history_newest_first(client):
    created = client.post("/fhir/Patient", json=patient()).json()
    pid = created["id"]
    for gender in ("female", "male"):
        client.put(f"/fhir/Patient/{pid}", json={**created, "gender": gender})
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert history["total"] == 3
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["3", "2", "1"]
    assert history["entry"][0]["response"]["etag"] == 'W/"3"'


def test_type_history_paging_and_since(client):
    marker = client.post("/fhir/Practitioner", json={"resourceType": "Practitioner"}).json()
    time.sleep(0.01)
    since = marker["meta"]["lastUpdated"]
    ids = [client.post("/fhir/Practitioner", json={"resourceType": "Practitioner"}).json()["id"] for _ in range(5)]
    page = client.get("/fhir/Practitioner/_history", params={"_since": since, "_count": "2"}).json()
    seen = []
    while True:
        seen += [e["resource"]["id"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        page = client.get(nxt[0].replace("http://testserver", "")).json()
    assert set(ids) <= set(seen)
    assert len(seen) == len(set(seen))
    assert marker["id"] not in seen or marker["meta"]["lastUpdated"] >= since


@pytest.mark.parametrize("level", ["type", "instance"])
def test_since_includes_the_version_written_at_that_instant(client, level):
    """`_since`: versions created at or after the instant, the boundary included."""
    written = client.post("/fhir/Device", json={"resourceType": "Device"}).json()
    path = "/fhir/Device/_history" if level == "type" else f"/fhir/Device/{written['id']}/_history"
    history = client.get(path, params={"_since": written["meta"]["lastUpdated"], "_count": "100"}).json()
    assert written["id"] in [e["resource"]["id"] for e in history["entry"]]


def test_history_at(client):
    created = client.post("/fhir/Location", json={"resourceType": "Location", "name": "Avant"}).json()
    lid = created["id"]
    time.sleep(0.02)
    moment = client.get(f"/fhir/Location/{lid}").json()["meta"]["lastUpdated"]
    time.sleep(0.02)
    client.put(f"/fhir/Location/{lid}", json={**created, "name": "Après"})
    at = client.get(f"/fhir/Location/{lid}/_history", params={"_at": moment}).json()
    assert [e["resource"]["name"] for e in at["entry"]] == ["Avant"]


def test_system_history_and_bad_since(client):
    client.post("/fhir/Patient", json=patient())
    system = client.get("/fhir/_history", params={"_count": "3"}).json()
    assert system["type"] == "history" and len(system["entry"]) == 3
    bad = client.get("/fhir/_history", params={"_since": "yesterday"})
    assert bad.status_code == 400
    assert bad.json()["issue"][0]["expression"] == ["_since"]


def test_history_of_unknown_instance(client):
    assert client.get("/fhir/Patient/unknown-x/_history").status_code == 404
