"""ITI-68 Retrieve Document: GET on attachment.url answers the document in its media type, or the
Binary resource for FHIR JSON / XML, and only to whoever may read its DocumentReference (masked
documents, invisible documents, the access matrix, a patient's Consent)."""

from __future__ import annotations

import base64

import pytest

from tests.http.test_mhd_support import (
    CR,
    FHIR_JSON,
    HOSPITAL_DOCTOR,
    IMAGERIE,
    PATIENT_ID,
    PHARMACIST,
    RFC3986,
    STRANGER_DOCTOR,
    VISIBILITY,
    doctor,
    example,
    fresh,
    load_patients,
    patient,
    provided_document,
)

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture(scope="module", autouse=True)
def patients(client):
    load_patients(client)


def binary_url(document: dict) -> str:
    return "/fhir/" + document["content"][0]["attachment"]["url"]


def can_read(client, document: dict, headers: dict) -> tuple[int, int]:
    """(status of the DocumentReference read, status of the raw Binary read)."""
    entry = client.get(f"/fhir/DocumentReference/{document['id']}", headers=headers).status_code
    raw = client.get(binary_url(document), headers={**headers, "Accept": "application/pdf"}).status_code
    return entry, raw


def set_labels(client, document: dict, labels: list[str], headers: dict) -> int:
    normal = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}
    codes = [normal] + [{"coding": [{"system": VISIBILITY, "code": code}]} for code in labels]
    identifier = f"{RFC3986}|{document['masterIdentifier']['value']}"
    response = client.patch(f"/fhir/DocumentReference?identifier={identifier}",
                            json=[{"op": "replace", "path": "/securityLabel", "value": codes}],
                            headers={**headers, **JSON_PATCH})
    return response.status_code


def test_raw_and_fhir_reads(client):
    document = provided_document(client, fresh(example(CR)))
    raw = client.get(binary_url(document), headers={"Accept": "application/pdf"})
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/pdf"
    assert raw.content.startswith(b"%PDF") and raw.headers["etag"] == 'W/"1"'
    as_json = client.get(binary_url(document), headers={"Accept": FHIR_JSON})
    assert as_json.headers["content-type"].startswith("application/fhir+json")
    assert base64.b64decode(as_json.json()["data"]) == raw.content
    as_xml = client.get(binary_url(document), headers={"Accept": "application/fhir+xml"})
    assert as_xml.headers["content-type"].startswith("application/fhir+xml")
    assert b"<Binary" in as_xml.content


def test_masked_document_hides_its_binary_from_professionals(client, issuer_dir):
    document = provided_document(client, fresh(example(CR)))
    stranger, author, owner = doctor(issuer_dir, STRANGER_DOCTOR), doctor(issuer_dir, HOSPITAL_DOCTOR), \
        patient(issuer_dir)
    assert can_read(client, document, stranger) == (200, 200)
    assert set_labels(client, document, ["MASQUE_PS"], owner) == 200           # the patient masks it
    assert can_read(client, document, stranger) == (404, 404)
    assert can_read(client, document, author) == (200, 200)                    # authors still read it
    assert can_read(client, document, owner) == (200, 200)
    version = client.get(binary_url(document) + "/_history/1", headers=stranger)
    assert version.status_code == 404                                           # nor its history
    assert set_labels(client, document, [], owner) == 200                       # and unmasks it
    assert can_read(client, document, stranger) == (200, 200)


def test_invisible_document_hides_its_binary_from_the_patient(client, issuer_dir):
    document = provided_document(client, fresh(example(CR)))
    author, owner = doctor(issuer_dir, HOSPITAL_DOCTOR), patient(issuer_dir)
    assert set_labels(client, document, ["INVISIBLE_PATIENT"], author) == 200
    assert can_read(client, document, owner) == (404, 404)
    assert can_read(client, document, doctor(issuer_dir, STRANGER_DOCTOR)) == (200, 200)
    assert set_labels(client, document, [], author) == 200
    assert can_read(client, document, owner) == (200, 200)


def test_access_matrix_applies_to_the_binary(client, issuer_dir):
    imaging = provided_document(client, fresh(example(IMAGERIE)))          # class "imagerie"
    assert can_read(client, imaging, doctor(issuer_dir, PHARMACIST, "21")) == (404, 404)
    assert can_read(client, imaging, doctor(issuer_dir, STRANGER_DOCTOR)) == (200, 200)


def test_patient_consent_blocking_a_professional_applies_to_the_binary(client, issuer_dir):
    document = provided_document(client, fresh(example(CR)))
    blocked = "10177777777"
    assert can_read(client, document, doctor(issuer_dir, blocked)) == (200, 200)
    consent = {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{PATIENT_ID}"},
        "provision": {"type": "permit", "provision": [{"type": "deny", "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                 "code": "IRCP"}]},
            "reference": {"identifier": {"system": "https://rpps.esante.gouv.fr", "value": blocked}}}]}]},
    }
    created = client.post("/fhir/Consent", json=consent)
    assert created.status_code == 201, created.text
    try:
        assert can_read(client, document, doctor(issuer_dir, blocked)) == (404, 404)
        assert can_read(client, document, doctor(issuer_dir, STRANGER_DOCTOR)) == (200, 200)
    finally:
        assert client.delete(f"/fhir/Consent/{created.json()['id']}").status_code == 200
    assert can_read(client, document, doctor(issuer_dir, blocked)) == (200, 200)


def test_binary_cannot_be_pointed_at_another_document_storage(client):
    """The storage pointer of a large document is the server's: a client cannot forge one."""
    forged = {"resourceType": "Binary", "contentType": "application/pdf", "_data": {"extension": [{
        "url": "https://espace.example.org/fhir/StructureDefinition/binary-gridfs-content",
        "extension": [{"url": "file", "valueString": "6b042e89dc4daf87828fb3e9"},
                      {"url": "size", "valueInteger": 10}, {"url": "sha1", "valueBase64Binary": "AAAA"}]}]}}
    response = client.post("/fhir/Binary", json=forged)
    assert response.status_code == 422
