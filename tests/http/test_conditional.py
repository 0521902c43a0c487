"""Conditional create, update, delete and patch (search-based)."""

from __future__ import annotations

INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"


def ins_patient(ins: str, family: str = "Durand") -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": INS_SYSTEM, "value": ins}],
            "name": [{"family": family}]}


def test_conditional_create(client):
    condition = {"If-None-Exist": f"identifier={INS_SYSTEM}|1840302123456"}
    first = client.post("/fhir/Patient", json=ins_patient("1840302123456"), headers=condition)
    assert first.status_code == 201
    second = client.post("/fhir/Patient", json=ins_patient("1840302123456"), headers=condition)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    client.post("/fhir/Patient", json=ins_patient("1840302123456"))           # now two match
    third = client.post("/fhir/Patient", json=ins_patient("1840302123456"), headers=condition)
    assert third.status_code == 412


def test_conditional_update(client):
    url = f"/fhir/Patient?identifier={INS_SYSTEM}|2750101999999"
    created = client.put(url, json=ins_patient("2750101999999"))
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = client.put(url, json=ins_patient("2750101999999", family="Dupont"))
    assert updated.status_code == 200
    assert updated.json()["id"] == pid
    assert updated.json()["meta"]["versionId"] == "2"
    client.post("/fhir/Patient", json=ins_patient("2750101999999"))
    assert client.put(url, json=ins_patient("2750101999999")).status_code == 412
    conflicting = client.put(f"/fhir/Patient?identifier={INS_SYSTEM}|2750101000000",
                             json={**ins_patient("2750101000000"), "id": "other"})
    assert conflicting.status_code == 201          # no match + id in body: update-as-create with that id


def test_conditional_delete(client):
    pid = client.post("/fhir/Patient", json=ins_patient("1990505111111")).json()["id"]
    response = client.delete(f"/fhir/Patient?identifier={INS_SYSTEM}|1990505111111")
    assert response.status_code == 200
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    nothing = client.delete(f"/fhir/Patient?identifier={INS_SYSTEM}|1990505111111")
    assert nothing.status_code == 200
    client.post("/fhir/Patient", json=ins_patient("1990505222222"))
    client.post("/fhir/Patient", json=ins_patient("1990505222222"))
    assert client.delete(f"/fhir/Patient?identifier={INS_SYSTEM}|1990505222222").status_code == 412


def test_type_level_write_without_criteria_is_400(client):
    assert client.delete("/fhir/Patient").status_code == 400


def test_conditional_patch(client):
    pid = client.post("/fhir/Patient", json=ins_patient("1660606333333")).json()["id"]
    patch = [{"op": "add", "path": "/active", "value": True}]
    response = client.patch(f"/fhir/Patient?identifier={INS_SYSTEM}|1660606333333", json=patch,
                            headers={"Content-Type": "application/json-patch+json"})
    assert response.status_code == 200
    assert response.json()["id"] == pid and response.json()["active"] is True
    missing = client.patch(f"/fhir/Patient?identifier={INS_SYSTEM}|0000000000000", json=patch,
                           headers={"Content-Type": "application/json-patch+json"})
    assert missing.status_code == 404
