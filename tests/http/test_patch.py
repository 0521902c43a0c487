"""PATCH with JSON Patch and FHIRPath Patch over HTTP: new version, validated like an update."""

from __future__ import annotations

from tests.http.conftest import issue_expressions, patient

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def test_json_patch_creates_new_version(client):
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    ops = [{"op": "replace", "path": "/name/0/family", "value": "Lefèvre"},
           {"op": "add", "path": "/birthDate", "value": "1990-01-31"}]
    response = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=JSON_PATCH)
    assert response.status_code == 200
    body = response.json()
    assert body["name"][0]["family"] == "Lefèvre" and body["birthDate"] == "1990-01-31"
    assert body["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").json()["name"][0]["family"] == "Martin"


def test_patch_result_is_validated(client):
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    ops = [{"op": "add", "path": "/birthDate", "value": "31/01/1990"}]
    response = client.patch(f"/fhir/Patient/{pid}", json=ops, headers=JSON_PATCH)
    assert response.status_code == 400
    assert "Patient.birthDate" in issue_expressions(response.json())
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_patch_cannot_change_id(client):
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    ops = [{"op": "replace", "path": "/id", "value": "hijack"}]
    assert client.patch(f"/fhir/Patient/{pid}", json=ops, headers=JSON_PATCH).status_code == 422


def test_patch_if_match(client):
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    ops = [{"op": "add", "path": "/active", "value": True}]
    stale = client.patch(f"/fhir/Patient/{pid}", json=ops, headers={**JSON_PATCH, "If-Match": 'W/"7"'})
    assert stale.status_code == 412


def test_fhirpath_patch(client):
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    parameters = {"resourceType": "Parameters", "parameter": [{
        "name": "operation",
        "part": [{"name": "type", "valueCode": "replace"},
                 {"name": "path", "valueString": "Patient.name[0].family"},
                 {"name": "value", "valueString": "Girard"}]}]}
    response = client.patch(f"/fhir/Patient/{pid}", json=parameters,
                            headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 200
    assert response.json()["name"][0]["family"] == "Girard"


def test_patch_bad_content_type(client):
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    response = client.patch(f"/fhir/Patient/{pid}", content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415


def test_patch_unknown_resource(client):
    response = client.patch("/fhir/Patient/nope", json=[], headers=JSON_PATCH)
    assert response.status_code == 404
