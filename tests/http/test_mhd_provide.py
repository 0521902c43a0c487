"""ITI-65 Provide Document Bundle (PDSm flux 01/02): the French example bundles go in whole, and
every way a provide bundle can be wrong is refused with a 422 naming the entry, nothing stored."""

from __future__ import annotations

import base64
import copy

import pytest

from tests.http.test_mhd_support import (
    BIOLOGIE,
    CR,
    FHIR_JSON,
    HOSPITAL_DOCTOR,
    IMAGERIE,
    ORDONNANCE,
    PATIENT_ID,
    REMPLACEMENT,
    RFC3986,
    diagnostics,
    doctor,
    entry_of,
    example,
    expressions,
    fresh,
    index_of,
    load_patients,
    pdf,
    provide,
    provided_document,
    sha1,
    with_document,
)


@pytest.fixture(scope="module", autouse=True)
def patients(client):
    load_patients(client)


def count(client, resource_type: str) -> int:
    params = {"_summary": "count", "_total": "accurate"}
    if resource_type == "DocumentReference":           # an ITI-67 search names the patient and the status
        params.update(patient=PATIENT_ID, status="current,superseded")
    response = client.get(f"/fhir/{resource_type}", params=params)
    assert response.status_code == 200, response.text
    return response.json()["total"]


@pytest.mark.parametrize("name", [CR, ORDONNANCE, BIOLOGIE, IMAGERIE])
def test_example_bundles_are_provided_whole(client, name):
    bundle = example(name)
    response = provide(client, bundle)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "transaction-response"
    # one response per request, in the same order
    kinds = [e["response"]["location"].split("/")[0] for e in answer["entry"]]
    assert kinds == [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert all(e["response"]["status"].startswith("201") for e in answer["entry"])
    document = next(e["resource"] for e in answer["entry"] if e["resource"]["resourceType"] == "DocumentReference")
    binary_location = next(e["response"]["location"] for e in answer["entry"]
                           if e["response"]["location"].startswith("Binary/"))
    # attachment.url rewritten from the bundle's urn:uuid to the stored Binary
    assert document["content"][0]["attachment"]["url"] == binary_location.split("/_history")[0]
    submission = answer["entry"][0]["resource"]
    assert submission["entry"][0]["item"]["reference"] == f"DocumentReference/{document['id']}"
    assert document["subject"]["reference"] == f"Patient/{PATIENT_ID}"


def test_provided_document_reads_back_with_its_binary_bound_to_it(client):
    document = provided_document(client, fresh(example(BIOLOGIE)))
    url = document["content"][0]["attachment"]["url"]
    binary = client.get(f"/fhir/{url}", headers={"Accept": FHIR_JSON}).json()
    assert binary["securityContext"] == {"reference": f"DocumentReference/{document['id']}"}
    raw = client.get(f"/fhir/{url}", headers={"Accept": "application/pdf"})
    assert raw.headers["content-type"] == "application/pdf"
    assert sha1(raw.content) == document["content"][0]["attachment"]["hash"]
    assert len(raw.content) == document["content"][0]["attachment"]["size"]


def test_example_bundles_can_be_loaded_again_without_duplicates(client):
    """The examples use conditional creates (make run loads them at every start)."""
    before = count(client, "DocumentReference")
    assert provide(client, example(ORDONNANCE)).status_code == 200
    assert provide(client, example(ORDONNANCE)).status_code == 200
    assert count(client, "DocumentReference") <= before + 1


# -- size and hash -----------------------------------------------------------------------------------------
def test_hash_mismatch_is_refused_naming_the_entry(client):
    bundle = fresh(example(CR))
    document_index = index_of(bundle, "DocumentReference")
    entry_of(bundle, "DocumentReference")["resource"]["content"][0]["attachment"]["hash"] = sha1(b"autre chose")
    before = count(client, "DocumentReference")
    response = provide(client, bundle)
    assert response.status_code == 422, response.text
    assert f"Bundle.entry[{document_index}].resource.content[0].attachment.hash" in expressions(response.json())
    assert "SHA-1" in diagnostics(response.json())
    assert count(client, "DocumentReference") == before


def test_altered_document_is_refused(client):
    bundle = fresh(example(ORDONNANCE))
    binary = entry_of(bundle, "Binary")["resource"]
    tampered = bytearray(base64.b64decode(binary["data"]))
    tampered[-10] ^= 0xFF                         # same size, other bytes
    binary["data"] = base64.b64encode(bytes(tampered)).decode()
    response = provide(client, bundle)
    assert response.status_code == 422
    assert expressions(response.json()) == [
        f"Bundle.entry[{index_of(bundle, 'DocumentReference')}].resource.content[0].attachment.hash"]


def test_size_and_media_type_mismatch_are_refused(client):
    bundle = fresh(example(CR))
    attachment = entry_of(bundle, "DocumentReference")["resource"]["content"][0]["attachment"]
    attachment["size"] += 1
    attachment["contentType"] = "image/jpeg"
    response = provide(client, bundle)
    assert response.status_code == 422
    where = f"Bundle.entry[{index_of(bundle, 'DocumentReference')}].resource.content[0].attachment"
    assert {f"{where}.size", f"{where}.contentType"} <= set(expressions(response.json()))


def test_attachment_must_point_at_a_binary(client):
    bundle = fresh(example(CR))
    attachment = entry_of(bundle, "DocumentReference")["resource"]["content"][0]["attachment"]
    attachment["url"] = "https://ailleurs.example.org/document.pdf"
    response = provide(client, bundle)
    assert response.status_code == 422
    assert any(e.endswith("attachment.url") for e in expressions(response.json()))
    attachment["url"] = "Binary/n-existe-pas"
    response = provide(client, bundle)
    assert response.status_code == 422
    assert "does not exist" in diagnostics(response.json())


def test_document_uploaded_first_then_described(client):
    """A large document may be sent raw to /Binary first; the provide bundle then points at it,
    its hash is checked against the stored bytes and the Binary gets the document's access rules."""
    content = pdf("Compte rendu de consultation de cardiologie")
    uploaded = client.post("/fhir/Binary", content=content, headers={"Content-Type": "application/pdf"})
    assert uploaded.status_code == 201
    binary_id = uploaded.json()["id"]
    bundle = with_document(fresh(example(CR)), content)
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Binary"]
    attachment = entry_of(bundle, "DocumentReference")["resource"]["content"][0]["attachment"]
    attachment["url"] = f"Binary/{binary_id}"
    wrong = copy.deepcopy(bundle)
    entry_of(wrong, "DocumentReference")["resource"]["content"][0]["attachment"]["hash"] = sha1(b"x")
    assert provide(client, wrong).status_code == 422
    document = provided_document(client, bundle)
    binary = client.get(f"/fhir/Binary/{binary_id}", headers={"Accept": FHIR_JSON}).json()
    assert binary["securityContext"]["reference"] == f"DocumentReference/{document['id']}"


# -- profiles and bundle structure ----------------------------------------------------------------------------
def test_non_conformant_document_reference_is_refused(client):
    bundle = fresh(example(CR))
    document = entry_of(bundle, "DocumentReference")["resource"]
    del document["custodian"]
    del document["content"][0]["attachment"]["title"]
    response = provide(client, bundle)
    assert response.status_code == 422
    where = f"Bundle.entry[{index_of(bundle, 'DocumentReference')}].resource"
    assert {f"{where}.custodian", f"{where}.content[0].attachment.title"} <= set(expressions(response.json()))


def test_non_conformant_submission_set_is_refused(client):
    bundle = fresh(example(CR))
    submission = bundle["entry"][0]["resource"]
    submission["extension"] = [e for e in submission["extension"] if not e["url"].endswith("ihe-sourceId")]
    response = provide(client, bundle)
    assert response.status_code == 422
    assert any(e.startswith("Bundle.entry[0].resource.extension") for e in expressions(response.json()))


def test_bundle_without_submission_set_or_document_is_refused(client):
    bundle = fresh(example(CR))
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "List"]
    response = provide(client, bundle)
    assert response.status_code == 422
    assert "exactly one submission set" in diagnostics(response.json())
    bundle = fresh(example(CR))
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "DocumentReference"]
    response = provide(client, bundle)
    assert response.status_code == 422
    assert "at least one document entry" in diagnostics(response.json())


def test_foreign_entries_are_refused(client):
    bundle = fresh(example(CR))
    bundle["entry"].append({"fullUrl": "urn:uuid:0b5e3a4c-0000-4000-8000-0000000000ff",
                            "request": {"method": "POST", "url": "Observation"},
                            "resource": {"resourceType": "Observation", "status": "final",
                                         "code": {"text": "poids"}}})
    response = provide(client, bundle)
    assert response.status_code == 422
    assert expressions(response.json()) == [f"Bundle.entry[{len(bundle['entry']) - 1}]"]


def test_every_document_is_listed_by_the_submission_set(client):
    bundle = fresh(example(CR))
    bundle["entry"][0]["resource"]["entry"] = []
    response = provide(client, bundle)
    assert response.status_code == 422
    assert "Bundle.entry[0].resource.entry" in expressions(response.json())


def test_one_patient_per_bundle(client):
    bundle = fresh(example(CR))
    entry_of(bundle, "DocumentReference")["resource"]["subject"] = {"reference": "Patient/autre-patient"}
    response = provide(client, bundle)
    assert response.status_code == 422
    assert any(e.endswith(".resource.subject") for e in expressions(response.json()))


def test_unique_master_identifier(client):
    bundle = fresh(example(CR))
    assert provide(client, bundle).status_code == 200
    again = fresh(example(CR))
    entry_of(again, "DocumentReference")["resource"]["masterIdentifier"] = \
        entry_of(bundle, "DocumentReference")["resource"]["masterIdentifier"]
    response = provide(client, again)
    assert response.status_code == 409
    assert any(e.endswith("resource.masterIdentifier") for e in expressions(response.json()))


def test_conditional_subject_is_resolved_by_ins(client):
    bundle = fresh(example(BIOLOGIE))
    ins = "Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|284037512345640"
    for entry in bundle["entry"]:
        if "subject" in entry["resource"]:
            entry["resource"]["subject"] = {"reference": ins}
    document = provided_document(client, bundle)
    assert document["subject"]["reference"] == f"Patient/{PATIENT_ID}"


def test_provide_bundle_in_xml(client):
    from fhir_server.formats.xml import resource_to_xml

    body = resource_to_xml(fresh(example(ORDONNANCE)))
    response = client.post("/fhir", content=body, headers={"Content-Type": "application/fhir+xml",
                                                           "Accept": "application/fhir+xml"})
    assert response.status_code == 200, response.text
    assert b"transaction-response" in response.content


def test_failed_bundle_leaves_nothing(client):
    before = {t: count(client, t) for t in ("DocumentReference", "List", "Binary")}
    bundle = fresh(example(IMAGERIE))
    entry_of(bundle, "DocumentReference")["resource"]["content"][0]["attachment"]["size"] = 1
    assert provide(client, bundle).status_code == 422
    assert {t: count(client, t) for t in before} == before


# -- replacement -----------------------------------------------------------------------------------------------
def replacement_of(original: dict) -> dict:
    bundle = fresh(example(REMPLACEMENT))
    target = original["masterIdentifier"]["value"]
    entry_of(bundle, "DocumentReference")["resource"]["relatesTo"][0]["target"] = {
        "reference": f"DocumentReference?identifier={RFC3986}|{target}"}
    return bundle


def test_replacement_supersedes_the_old_version_in_the_same_transaction(client):
    original = provided_document(client, fresh(example(CR)))
    new = provided_document(client, replacement_of(original))
    assert new["relatesTo"][0]["target"]["reference"] == f"DocumentReference/{original['id']}"
    old = client.get(f"/fhir/DocumentReference/{original['id']}").json()
    assert old["status"] == "superseded"
    assert old["meta"]["versionId"] == "2"
    current = client.get("/fhir/DocumentReference", params={"patient": PATIENT_ID, "status": "current",
                                                             "_count": "200"}).json()
    ids = {e["resource"]["id"] for e in current.get("entry", [])}
    assert new["id"] in ids and original["id"] not in ids


def test_replacing_a_missing_document_is_an_error(client):
    bundle = fresh(example(REMPLACEMENT))
    entry_of(bundle, "DocumentReference")["resource"]["relatesTo"][0]["target"] = {
        "reference": "DocumentReference/n-existe-pas"}
    response = provide(client, bundle)
    assert response.status_code == 422
    where = f"Bundle.entry[{index_of(bundle, 'DocumentReference')}].resource.relatesTo[0].target"
    assert where in expressions(response.json())
    assert "does not exist" in diagnostics(response.json())


def test_replacing_a_superseded_document_is_an_error(client):
    original = provided_document(client, fresh(example(CR)))
    assert provide(client, replacement_of(original)).status_code == 200
    response = provide(client, replacement_of(original))
    assert response.status_code == 422
    assert "superseded" in diagnostics(response.json())


def test_replacement_with_the_mhd_patch_entry(client):
    """MHD lets the source send the supersede itself (UpdateDocumentRefs): same outcome."""
    original = provided_document(client, fresh(example(CR)))
    bundle = replacement_of(original)
    bundle["entry"].append({"request": {"method": "PATCH", "url": f"DocumentReference/{original['id']}"},
                            "resource": {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
                                {"name": "type", "valueCode": "replace"},
                                {"name": "path", "valueString": "DocumentReference.status"},
                                {"name": "value", "valueCode": "superseded"}]}]}})
    response = provide(client, bundle)
    assert response.status_code == 200, response.text
    assert client.get(f"/fhir/DocumentReference/{original['id']}").json()["status"] == "superseded"


def test_author_token_provides_and_replaces(client, issuer_dir):
    author = doctor(issuer_dir, HOSPITAL_DOCTOR)
    original = provided_document(client, fresh(example(CR)), author)
    response = provide(client, replacement_of(original), author)
    assert response.status_code == 200, response.text
