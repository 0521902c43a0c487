"""Metadata update of a shared document (PDSm flux 03) by conditional PATCH on its identifier, in
JSON Patch and FHIRPath Patch: status, security labels and the archive flag only, each by those
entitled to; logical deletion by the patient or an author."""

from __future__ import annotations

import base64

import pytest

from fhir_server.formats.xml import resource_to_xml
from tests.http.test_mhd_support import (
    CR,
    FHIR_JSON,
    HOSPITAL_DOCTOR,
    IS_ARCHIVED,
    RFC3986,
    STRANGER_DOCTOR,
    VISIBILITY,
    diagnostics,
    doctor,
    example,
    expressions,
    fresh,
    load_patients,
    patient,
    provided_document,
)

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
XML_PATCH = {"Content-Type": "application/xml-patch+xml", "Accept": FHIR_JSON}
FHIR_XML_NS = "http://hl7.org/fhir"
NORMAL = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}


@pytest.fixture(scope="module", autouse=True)
def patients(client):
    load_patients(client)


@pytest.fixture
def document(client) -> dict:
    return provided_document(client, fresh(example(CR)))


def by_identifier(document: dict) -> str:
    return f"/fhir/DocumentReference?identifier={RFC3986}|{document['masterIdentifier']['value']}"


def json_patch(client, document: dict, operations: list, headers: dict | None = None):
    return client.patch(by_identifier(document), json=operations, headers={**(headers or {}), **JSON_PATCH})


def fhirpath_patch(client, document: dict, *operations: dict, headers: dict | None = None, xml: bool = False):
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "operation", "part": [{"name": k, **v} for k, v in op.items()]} for op in operations]}
    if xml:
        return client.patch(by_identifier(document), content=resource_to_xml(parameters),
                            headers={**(headers or {}), "Content-Type": "application/fhir+xml", "Accept": FHIR_JSON})
    return client.patch(by_identifier(document), json=parameters,
                        headers={**(headers or {}), "Content-Type": FHIR_JSON})


def xml_patch(client, document: dict, *operations: str, headers: dict | None = None):
    diff = f'<diff xmlns:f="{FHIR_XML_NS}">{"".join(operations)}</diff>'
    return client.patch(by_identifier(document), content=diff.encode(), headers={**(headers or {}), **XML_PATCH})


def add(path: str, name: str, value: dict) -> dict:
    return {"type": {"valueCode": "add"}, "path": {"valueString": path}, "name": {"valueString": name},
            "value": value}


def mask(code: str) -> dict:
    return {"valueCodeableConcept": {"coding": [{"system": VISIBILITY, "code": code}]}}


# -- what may change -------------------------------------------------------------------------------------
def test_status_by_json_patch(client, issuer_dir, document):
    response = json_patch(client, document, [{"op": "replace", "path": "/status", "value": "superseded"}],
                          doctor(issuer_dir, HOSPITAL_DOCTOR))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "superseded"
    assert response.json()["meta"]["versionId"] == "2"


def test_masking_by_fhirpath_patch(client, issuer_dir, document):
    response = fhirpath_patch(client, document, add("DocumentReference", "securityLabel", mask("MASQUE_PS")),
                              headers=patient(issuer_dir))
    assert response.status_code == 200, response.text
    codes = [c["code"] for label in response.json()["securityLabel"] for c in label["coding"]]
    assert codes == ["N", "MASQUE_PS"]


def test_archiving_by_fhirpath_patch_in_xml(client, issuer_dir, document):
    flag = {"part": [{"name": "url", "valueUri": IS_ARCHIVED}, {"name": "valueBoolean", "valueBoolean": True}]}
    response = fhirpath_patch(client, document, add("DocumentReference", "extension", flag),
                              headers=patient(issuer_dir), xml=True)
    assert response.status_code == 200, response.text
    assert response.json()["extension"] == [{"url": IS_ARCHIVED, "valueBoolean": True}]
    search = client.get("/fhir/DocumentReference", params={"patient": document["subject"]["reference"],
                                                           "status": "current", "isArchived": "true"}).json()
    assert document["id"] in {e["resource"]["id"] for e in search["entry"]}


# -- what may not ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("operation", "path"), [
    ({"op": "add", "path": "/description", "value": "Autre"}, "DocumentReference.description"),
    ({"op": "replace", "path": "/content/0/attachment/title", "value": "Autre titre"},
     "DocumentReference.content[0].attachment.title"),
    ({"op": "add", "path": "/extension", "value": [{"url": "http://example.org/x", "valueString": "y"}]},
     "DocumentReference.extension"),
    ({"op": "replace", "path": "/subject", "value": {"reference": "Patient/autre-patient"}},
     "DocumentReference.subject"),
])
def test_other_paths_are_not_updatable(client, document, operation, path):
    response = json_patch(client, document, [operation])
    assert response.status_code == 405
    assert [e for e in expressions(response.json()) if e.startswith(path)]
    assert "cannot be changed" in diagnostics(response.json())


def test_other_paths_are_not_updatable_by_fhirpath_patch(client, document):
    replace = {"type": {"valueCode": "replace"}, "path": {"valueString": "DocumentReference.custodian.display"},
               "value": {"valueString": "Autre"}}
    response = fhirpath_patch(client, document, replace)
    assert response.status_code == 405
    assert expressions(response.json()) == ["DocumentReference.custodian.display"]


def test_logical_deletion_is_not_a_status(client, document):
    response = json_patch(client, document, [{"op": "replace", "path": "/status", "value": "entered-in-error"}])
    assert response.status_code == 422
    assert "DELETE" in diagnostics(response.json())


def test_patch_of_an_unknown_identifier(client):
    response = client.patch(f"/fhir/DocumentReference?identifier={RFC3986}|urn:oid:1.2.3.4.404",
                            json=[{"op": "replace", "path": "/status", "value": "superseded"}], headers=JSON_PATCH)
    assert response.status_code == 404


# -- who may ----------------------------------------------------------------------------------------------
def test_patient_cannot_hide_a_document_from_themselves_or_change_status(client, issuer_dir, document):
    owner = patient(issuer_dir)
    response = fhirpath_patch(client, document, add("DocumentReference", "securityLabel", mask("INVISIBLE_PATIENT")),
                              headers=owner)
    assert response.status_code == 403
    response = json_patch(client, document, [{"op": "replace", "path": "/status", "value": "superseded"}], owner)
    assert response.status_code == 403
    assert expressions(response.json()) == ["DocumentReference.status"]


def test_other_professional_cannot_update_metadata(client, issuer_dir, document):
    stranger = doctor(issuer_dir, STRANGER_DOCTOR)
    response = fhirpath_patch(client, document, add("DocumentReference", "securityLabel", mask("MASQUE_PS")),
                              headers=stranger)
    assert response.status_code == 403
    response = json_patch(client, document, [{"op": "replace", "path": "/status", "value": "superseded"}], stranger)
    assert response.status_code == 403


def test_author_hides_a_document_until_announced(client, issuer_dir, document):
    response = fhirpath_patch(client, document, add("DocumentReference", "securityLabel",
                                                    mask("INVISIBLE_PATIENT")),
                              headers=doctor(issuer_dir, HOSPITAL_DOCTOR))
    assert response.status_code == 200, response.text
    response = json_patch(client, document, [{"op": "replace", "path": "/securityLabel", "value": [NORMAL]}],
                          doctor(issuer_dir, HOSPITAL_DOCTOR))
    assert response.status_code == 200


# -- logical deletion -------------------------------------------------------------------------------------
def test_deletion_by_another_professional_is_refused(client, issuer_dir, document):
    response = client.delete(f"/fhir/DocumentReference/{document['id']}", headers=doctor(issuer_dir, STRANGER_DOCTOR))
    assert response.status_code == 403
    assert client.get(f"/fhir/DocumentReference/{document['id']}").status_code == 200


@pytest.mark.parametrize("who", ["patient", "author"])
def test_deletion_by_the_patient_or_an_author(client, issuer_dir, document, who):
    headers = patient(issuer_dir) if who == "patient" else doctor(issuer_dir, HOSPITAL_DOCTOR)
    binary = "/fhir/" + document["content"][0]["attachment"]["url"]
    response = client.delete(f"/fhir/DocumentReference/{document['id']}", headers=headers)
    assert response.status_code == 200, response.text
    assert client.get(f"/fhir/DocumentReference/{document['id']}").status_code == 410
    assert client.get(binary, headers={"Accept": "application/pdf"}).status_code == 410     # deleted with it
    history = client.get(f"/fhir/DocumentReference/{document['id']}/_history/1")
    assert history.status_code == 200                                                        # kept for the record


# -- a shared document is not rewritten ------------------------------------------------------------------
@pytest.mark.parametrize("who", ["patient", "author"])
def test_entry_is_not_rewritten(client, issuer_dir, document, who):
    headers = patient(issuer_dir) if who == "patient" else doctor(issuer_dir, HOSPITAL_DOCTOR)
    rewritten = {**document, "description": "Réécrit"}
    response = client.put(f"/fhir/DocumentReference/{document['id']}", json=rewritten, headers=headers)
    assert response.status_code == 405
    assert "replaces" in diagnostics(response.json())


def test_document_bytes_and_binding_do_not_change(client, issuer_dir, document):
    url = "/fhir/" + document["content"][0]["attachment"]["url"]
    binary = client.get(url, headers={"Accept": FHIR_JSON}).json()
    other = {**binary, "data": base64.b64encode(b"%PDF-1.4 autre contenu").decode()}
    for headers in ({}, doctor(issuer_dir, HOSPITAL_DOCTOR)):
        response = client.put(url, json=other, headers=headers)
        assert response.status_code == 405, response.text
    response = client.put(url, json={**binary, "securityContext": {"reference": "DocumentReference/autre"}})
    assert response.status_code == 405
    assert client.put(url, json=binary).status_code == 200                    # same bytes: a no-op version
    assert client.delete(url).status_code == 405
    assert client.get(url, headers={"Accept": "application/pdf"}).status_code == 200


# -- XML Patch (RFC 5261): the same rules ------------------------------------------------------------------
def test_status_by_xml_patch(client, issuer_dir, document):
    response = xml_patch(client, document, '<replace sel="f:DocumentReference/f:status/@value">superseded</replace>',
                         headers=doctor(issuer_dir, HOSPITAL_DOCTOR))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "superseded" and response.json()["meta"]["versionId"] == "2"


def test_masking_and_archiving_by_xml_patch(client, issuer_dir, document):
    label = (f'<securityLabel xmlns="{FHIR_XML_NS}"><coding><system value="{VISIBILITY}"/>'
             '<code value="MASQUE_PS"/></coding></securityLabel>')
    archived = f'<extension xmlns="{FHIR_XML_NS}" url="{IS_ARCHIVED}"><valueBoolean value="true"/></extension>'
    response = xml_patch(client, document, f'<add sel="f:DocumentReference/f:securityLabel" pos="after">{label}</add>',
                         f'<add sel="f:DocumentReference/f:meta" pos="after">{archived}</add>',
                         headers=patient(issuer_dir))
    assert response.status_code == 200, response.text
    codes = [c["code"] for label in response.json()["securityLabel"] for c in label["coding"]]
    assert codes == ["N", "MASQUE_PS"]
    assert response.json()["extension"] == [{"url": IS_ARCHIVED, "valueBoolean": True}]


@pytest.mark.parametrize(("operation", "path"), [
    ('<add sel="f:DocumentReference/f:securityLabel" pos="after"><description xmlns="{ns}" value="Autre"/></add>',
     "DocumentReference.description"),
    ('<replace sel="f:DocumentReference/f:content/f:attachment/f:title/@value">Autre titre</replace>',
     "DocumentReference.content[0].attachment.title"),
    ('<remove sel="f:DocumentReference/f:custodian"/>', "DocumentReference.custodian"),
])
def test_other_paths_are_not_updatable_by_xml_patch(client, document, operation, path):
    response = xml_patch(client, document, operation.format(ns=FHIR_XML_NS))
    assert response.status_code == 405, response.text
    assert [e for e in expressions(response.json()) if e.startswith(path)]
    assert "cannot be changed" in diagnostics(response.json())


def test_xml_patch_by_others_and_malformed_ones_are_refused(client, issuer_dir, document):
    response = xml_patch(client, document, '<replace sel="f:DocumentReference/f:status/@value">superseded</replace>',
                         headers=patient(issuer_dir))
    assert response.status_code == 403
    response = xml_patch(client, document, '<replace sel="f:DocumentReference/f:status/@value">entered-in-error'
                         '</replace>')
    assert response.status_code == 422
    response = xml_patch(client, document, '<remove sel="f:DocumentReference/f:relatesTo"/>')
    assert response.status_code == 422                                   # selects nothing
    response = client.patch(by_identifier(document), content=b"<diff><add", headers=XML_PATCH)
    assert response.status_code == 400
    assert client.get(f"/fhir/DocumentReference/{document['id']}").json()["meta"]["versionId"] == "1"
