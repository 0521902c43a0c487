"""PATCH with JSON Patch and FHIRPath Patch over HTTP: new version, validated like an update."""

from __future__ import annotations

import base64

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


# -- XML Patch (RFC 5261) ------------------------------------------------------------------------------
XML_PATCH = {"Content-Type": "application/xml-patch+xml"}
DIFF = '<diff xmlns:f="http://hl7.org/fhir">{}</diff>'


def test_xml_patch_creates_new_version(client):
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    diff = DIFF.format('<replace sel="f:Patient/f:name/f:family/@value">Lefèvre</replace>'
                       '<add sel="f:Patient"><birthDate xmlns="http://hl7.org/fhir" value="1990-01-31"/></add>')
    response = client.patch(f"/fhir/Patient/{pid}", content=diff.encode(), headers=XML_PATCH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"][0]["family"] == "Lefèvre" and body["birthDate"] == "1990-01-31"
    assert body["meta"]["versionId"] == "2"


def test_xml_patch_errors(client):
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    response = client.patch(f"/fhir/Patient/{pid}", content=b"<diff><replace", headers=XML_PATCH)
    assert response.status_code == 400
    missing = DIFF.format('<remove sel="f:Patient/f:telecom"/>')
    response = client.patch(f"/fhir/Patient/{pid}", content=missing.encode(), headers=XML_PATCH)
    assert response.status_code == 422
    invalid = DIFF.format('<replace sel="f:Patient/f:name/f:given/@value"></replace>')
    response = client.patch(f"/fhir/Patient/{pid}", content=invalid.encode(), headers=XML_PATCH)
    assert response.status_code == 422
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "1"


# -- patches in a transaction: the Binary of a JSON Patch or an XML Patch ---------------------------------
def patch_entry(url: str, content: bytes, content_type: str) -> dict:
    return {"request": {"method": "PATCH", "url": url},
            "resource": {"resourceType": "Binary", "contentType": content_type,
                         "data": base64.b64encode(content).decode()}}


def test_json_patch_in_a_transaction_keeps_decimals_exact(client):
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "Poids"},
                   "valueQuantity": {"value": 70, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}}
    oid = client.post("/fhir/Observation", json=observation).json()["id"]
    patch = b'[{"op": "replace", "path": "/valueQuantity/value", "value": 72.50}]'
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [patch_entry(f"Observation/{oid}", patch, "application/json-patch+json")]}
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    raw = client.get(f"/fhir/Observation/{oid}").content
    assert b'"value":72.50' in raw.replace(b" ", b"")


def test_xml_patch_in_a_transaction(client):
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    diff = DIFF.format('<add sel="f:Patient"><active xmlns="http://hl7.org/fhir" value="false"/></add>').encode()
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [patch_entry(f"Patient/{pid}", diff, "application/xml-patch+xml")]}
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    assert client.get(f"/fhir/Patient/{pid}").json()["active"] is False
    bundle["entry"][0]["resource"]["data"] = base64.b64encode(b"pas du JSON").decode()
    bundle["entry"][0]["resource"]["contentType"] = "application/json-patch+json"
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 400
    assert issue_expressions(response.json()) == ["Bundle.entry[0].resource.data"]
