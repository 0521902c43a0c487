"""ITI-105 Simplified Publish (PDSm flux 09): a DocumentReference posted with its document inline
becomes a Binary, a PDSm comprehensive entry and a submission set, in one transaction; a patient
adds their own photo or PDF within the configured limits."""

from __future__ import annotations

import base64
import copy

import pytest
from fastapi.testclient import TestClient

from fhir_server.access.devissuer import system_claims
from fhir_server.rest.app import create_app
from tests.http.conftest import bearer
from tests.http.test_mhd_support import (
    FHIR_JSON,
    GP,
    OTHER_PATIENT_ID,
    PATIENT_ID,
    PHOTO,
    diagnostics,
    doctor,
    example,
    expressions,
    load_patients,
    patient,
    pdf,
    sha1,
    unique_oid,
)

A00 = "https://mos.esante.gouv.fr/NOS/TRE_A00-ProducteurDocNonPS/FHIR/TRE-A00-ProducteurDocNonPS"
SIMPLIFIED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-simplified-publish"


@pytest.fixture(scope="module", autouse=True)
def patients(client):
    load_patients(client)


def photo(**changes) -> dict:
    document = example(PHOTO)
    document["masterIdentifier"]["value"] = unique_oid()
    document.update(changes)
    return document


def professional_publication(content: bytes, **changes) -> dict:
    """What a practice software posts: a PDF, its author contained, PDSm codes."""
    document = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [SIMPLIFIED]},
        "contained": [{"resourceType": "PractitionerRole", "id": "auteur",
                       "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "8" + GP}]}],
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": unique_oid()},
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "CR de consultation"}]},
        "category": [{"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/"
                                            "TRE-A03-ClasseDocument", "code": "10", "display": "Compte rendu"}]}],
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "date": "2026-11-18T11:30:00+01:00",
        "author": [{"reference": "#auteur"}],
        "custodian": {"display": "Cabinet du Dr Hélène Bertrand"},
        "content": [{"attachment": {"contentType": "application/pdf", "data": base64.b64encode(content).decode(),
                                    "title": "CR de consultation du 18/11/2026"}}],
        "context": {"facilityType": {"coding": [{
            "system": "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite",
            "code": "SA07"}]}, "practiceSetting": {"coding": [{
                "system": "https://mos.esante.gouv.fr/NOS/TRE_A01-CadreExercice/FHIR/TRE-A01-CadreExercice",
                "code": "AMBULATOIRE"}]}},
    }
    document.update(changes)
    return document


def publish(client, document: dict, headers: dict | None = None):
    return client.post("/fhir/DocumentReference", json=document, headers=headers or {})


def test_simplified_publish_stores_binary_entry_and_submission_set(client):
    content = pdf("Compte rendu de consultation")
    response = publish(client, professional_publication(content))
    assert response.status_code == 201, response.text
    stored = response.json()
    assert response.headers["Location"].startswith(f"http://testserver/fhir/DocumentReference/{stored['id']}")
    attachment = stored["content"][0]["attachment"]
    assert "data" not in attachment
    assert attachment["size"] == len(content) and attachment["hash"] == sha1(content)
    assert attachment["url"].startswith("Binary/")
    assert stored["meta"]["profile"] == [
        "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-comprehensive-document-reference"]
    assert stored["securityLabel"][0]["coding"][0]["code"] == "N"                 # defaults
    assert attachment["language"] == "fr-FR" and stored["context"]["period"]["start"]
    raw = client.get(f"/fhir/{attachment['url']}", headers={"Accept": "application/pdf"})
    assert raw.content == content
    lists = client.get("/fhir/List", params={"patient": PATIENT_ID, "status": "current",
                                              "code": "submissionset", "item": f"DocumentReference/{stored['id']}"})
    assert lists.status_code == 200
    assert len(lists.json()["entry"]) == 1


def test_retried_publication_answers_the_stored_entry(client):
    document = professional_publication(pdf("Compte rendu de consultation (retry)"))
    first = publish(client, document)
    again = publish(client, document)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]


def test_same_master_identifier_for_another_document_is_a_conflict(client):
    document = professional_publication(pdf("Premier document"))
    assert publish(client, document).status_code == 201
    other = copy.deepcopy(document)
    other["content"][0]["attachment"]["data"] = base64.b64encode(pdf("Un autre document")).decode()
    response = publish(client, other)
    assert response.status_code == 409
    assert expressions(response.json()) == ["DocumentReference.masterIdentifier"]


def test_wrong_declared_hash_or_bad_base64_is_refused(client):
    content = pdf("Compte rendu")
    document = professional_publication(content)
    document["content"][0]["attachment"]["hash"] = sha1(b"autre")
    response = publish(client, document)
    assert response.status_code == 422
    assert expressions(response.json()) == ["DocumentReference.content[0].attachment.hash"]
    document = professional_publication(content)
    document["content"][0]["attachment"]["data"] = "pas du base64 !"
    assert publish(client, document).status_code == 400


def test_non_conformant_simplified_publish_is_refused(client):
    document = professional_publication(pdf("Compte rendu"))
    del document["custodian"]
    response = publish(client, document)
    assert response.status_code == 422
    assert "DocumentReference.custodian" in expressions(response.json())


def test_what_a_stored_entry_needs_is_asked_for(client):
    """A simplified publish may omit the type; a shared entry may not."""
    document = professional_publication(pdf("Compte rendu"))
    del document["type"]
    response = publish(client, document)
    assert response.status_code == 422
    assert expressions(response.json()) == ["DocumentReference.type"]


def test_nothing_is_stored_when_publication_fails(client):
    before = client.get("/fhir/Binary", params={"_summary": "count", "_total": "accurate"}).json()["total"]
    document = professional_publication(pdf("Compte rendu"))
    document["subject"] = {"reference": "Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|000000000000000"}
    response = publish(client, document)
    assert response.status_code == 404, response.text             # the conditional subject matches nobody
    after = client.get("/fhir/Binary", params={"_summary": "count", "_total": "accurate"}).json()["total"]
    assert after == before


def test_conditional_subject_is_resolved(client):
    document = professional_publication(pdf("Compte rendu"))
    document["subject"] = {"reference": "Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|284037512345640"}
    response = publish(client, document)
    assert response.status_code == 201, response.text
    assert response.json()["subject"]["reference"] == f"Patient/{PATIENT_ID}"


def test_professional_publishes_with_their_token(client, issuer_dir):
    response = publish(client, professional_publication(pdf("Compte rendu")), doctor(issuer_dir, GP))
    assert response.status_code == 201, response.text


# -- the submission set's source (PDSm: a contained PractitionerRole, Device or Patient) ---------------------
SEGUR_AUTHOR = {"resourceType": "Practitioner", "id": "practitioner-author",
                "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "8" + GP}],
                "name": [{"family": "Bertrand", "given": ["Hélène"], "prefix": ["Dr"]}]}


def submission_set_of(client, stored: dict, headers: dict | None = None) -> dict:
    response = client.get("/fhir/List", headers=headers or {}, params={
        "patient": stored["subject"]["reference"], "status": "current", "code": "submissionset",
        "item": f"DocumentReference/{stored['id']}"})
    assert response.status_code == 200, response.text
    [entry] = response.json()["entry"]
    return entry["resource"]


def source_of(submission: dict) -> dict:
    return next(c for c in submission["contained"] if f"#{c['id']}" == submission["source"]["reference"])


def contained_of(submission: dict, reference: str) -> dict:
    return next(c for c in submission["contained"] if f"#{c['id']}" == reference)


def test_contained_practitioner_author_is_the_practitioner_of_a_role_source(client, issuer_dir):
    """The usual Ségur payload (author = contained Practitioner): PDSm wants a PractitionerRole as the
    submission set source, which names a contained copy of the Practitioner."""
    document = professional_publication(pdf("CR (auteur Practitioner)"), contained=[copy.deepcopy(SEGUR_AUTHOR)],
                                        author=[{"reference": "#practitioner-author"}])
    response = publish(client, document, doctor(issuer_dir, GP))
    assert response.status_code == 201, response.text
    submission = submission_set_of(client, response.json(), doctor(issuer_dir, GP))     # the author reads it
    role = source_of(submission)
    assert role["resourceType"] == "PractitionerRole"
    assert role["practitioner"]["identifier"] == SEGUR_AUTHOR["identifier"][0]
    assert contained_of(submission, role["practitioner"]["reference"]) == SEGUR_AUTHOR


def test_practitioner_known_to_the_server_is_the_practitioner_of_a_role_source(client):
    assert client.put("/fhir/Practitioner/dr-bertrand", json={**SEGUR_AUTHOR, "id": "dr-bertrand"}).status_code in (
        200, 201)
    document = professional_publication(pdf("CR (auteur Practitioner/[id])"), author=[
        {"reference": "Practitioner/dr-bertrand"}], contained=[{"resourceType": "Patient", "id": "patient-source"}])
    document["context"]["sourcePatientInfo"] = {"reference": "#patient-source"}
    response = publish(client, document)
    assert response.status_code == 201, response.text
    role = source_of(submission_set_of(client, response.json()))
    assert role["resourceType"] == "PractitionerRole"
    assert role["practitioner"] == {"reference": "Practitioner/dr-bertrand"}


def test_role_author_brings_its_contained_practitioner_along(client):
    role = {"resourceType": "PractitionerRole", "id": "auteur", "practitioner": {"reference": "#ps"}}
    document = professional_publication(pdf("CR (auteur PractitionerRole)"),
                                        contained=[role, {**copy.deepcopy(SEGUR_AUTHOR), "id": "ps"}])
    response = publish(client, document)
    assert response.status_code == 201, response.text
    submission = submission_set_of(client, response.json())
    assert source_of(submission) == role
    assert contained_of(submission, "#ps")["identifier"] == SEGUR_AUTHOR["identifier"]


def test_patient_author_is_the_source(client, issuer_dir):
    response = publish(client, photo(), patient(issuer_dir))
    assert response.status_code == 201, response.text
    author = source_of(submission_set_of(client, response.json()))
    assert author["resourceType"] == "Patient" and author["identifier"][0]["value"] == "284037512345640"


# -- the patient's own documents ------------------------------------------------------------------------------
def test_example_patient_photo(client, issuer_dir):
    response = publish(client, photo(), patient(issuer_dir))
    assert response.status_code == 201, response.text
    stored = response.json()
    assert stored["content"][0]["attachment"]["contentType"] == "image/png"
    binary = client.get(f"/fhir/{stored['content'][0]['attachment']['url']}", headers=patient(issuer_dir) | {
        "Accept": "image/png"})
    assert binary.status_code == 200 and binary.content.startswith(b"\x89PNG")


def test_patient_publication_gets_the_patient_as_author(client, issuer_dir):
    document = photo()
    del document["author"], document["contained"], document["context"], document["custodian"]
    response = publish(client, document, patient(issuer_dir))
    assert response.status_code == 201, response.text
    stored = response.json()
    author = next(c for c in stored["contained"] if f"#{c['id']}" == stored["author"][0]["reference"])
    assert author["resourceType"] == "Patient"
    assert author["identifier"][0]["value"] == "284037512345640"
    assert stored["context"]["practiceSetting"]["coding"][0]["system"] == A00
    assert stored["custodian"]["display"]


def test_patient_may_not_publish_other_media_types(client, issuer_dir):
    document = photo()
    document["content"][0]["attachment"].update(contentType="video/mp4")
    response = publish(client, document, patient(issuer_dir))
    assert response.status_code == 422
    assert "application/pdf" in diagnostics(response.json())


def test_patient_may_not_publish_as_someone_else(client, issuer_dir):
    document = photo()
    document["contained"][0]["identifier"][0]["value"] = "190017512345678"
    response = publish(client, document, patient(issuer_dir))
    assert response.status_code == 403
    assert expressions(response.json()) == ["DocumentReference.author"]


def test_patient_may_not_publish_into_another_space(client, issuer_dir):
    document = photo(subject={"reference": f"Patient/{OTHER_PATIENT_ID}"})
    response = publish(client, document, patient(issuer_dir))
    assert response.status_code == 403


def test_patient_practice_setting_comes_from_tre_a00(client, issuer_dir):
    document = photo()
    document["context"]["practiceSetting"] = {"coding": [{"system": "http://snomed.info/sct", "code": "394802001"}]}
    response = publish(client, document, patient(issuer_dir))
    assert response.status_code == 422
    assert expressions(response.json()) == ["DocumentReference.context.practiceSetting"]


def test_patient_size_limit_is_configurable(mongo_uri, settings, issuer_dir, monkeypatch):
    monkeypatch.setenv("FHIR_MHD_PATIENT_MAX_BYTES", "1000")
    monkeypatch.setenv("FHIR_MHD_PATIENT_CONTENT_TYPES", "application/pdf")
    app = create_app(settings, mongo_uri)
    with TestClient(app, base_url="http://testserver",
                    headers=bearer(issuer_dir, system_claims("system/*.cruds", "t"))) as small:
        load_patients(small)
        document = photo()
        document["content"][0]["attachment"].update(contentType="application/pdf",
                                                    data=base64.b64encode(pdf("x", 2000)).decode())
        response = publish(small, document, patient(issuer_dir))
        assert response.status_code == 413
        assert "1000 bytes" in diagnostics(response.json())
        assert publish(small, photo(), patient(issuer_dir)).status_code == 422      # png not allowed here


def test_read_as_fhir_binary(client):
    stored = publish(client, professional_publication(pdf("Compte rendu"))).json()
    binary = client.get(f"/fhir/{stored['content'][0]['attachment']['url']}", headers={"Accept": FHIR_JSON}).json()
    assert binary["resourceType"] == "Binary"
    assert base64.b64decode(binary["data"]).startswith(b"%PDF")
