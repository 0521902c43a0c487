"""A FHIR document (a Bundle of type document, here a VSM) as the content of a document entry of an
ITI-65 bundle (FhirDocuments slice): size and hash checked on its serialization, stored as
`Bundle/[id]`, protected like its entry, immutable, deleted with it."""

from __future__ import annotations

import base64
import copy
import hashlib
import uuid

import pytest

from fhir_server.formats.json import dump_json
from fhir_server.formats.xml import resource_to_xml
from tests.http.test_mhd_support import (
    FHIR_JSON,
    GP,
    STRANGER_DOCTOR,
    VISIBILITY,
    diagnostics,
    doctor,
    entry_of,
    example,
    expressions,
    load_patients,
    patient,
    provide,
    unique_oid,
)

VSM = "07-iti65-synthese-medicale-document-fhir.json"
DOCUMENT_ENTRY, FHIR_DOCUMENT = 1, 2


@pytest.fixture(scope="module", autouse=True)
def patients(client):
    load_patients(client)


def fresh_vsm() -> dict:
    """The example made new: its own ids (the server assigns the entryUUID), plain POSTs."""
    bundle = example(VSM)
    for entry in bundle["entry"]:
        entry["request"].pop("ifNoneExist", None)
    unique = f"urn:uuid:{uuid.uuid4()}"
    entry_of(bundle, "List")["resource"]["identifier"][0]["value"] = unique_oid()
    document_entry = entry_of(bundle, "DocumentReference")["resource"]
    del document_entry["identifier"]
    document_entry["masterIdentifier"]["value"] = unique
    bundle["entry"][FHIR_DOCUMENT]["resource"]["identifier"]["value"] = unique
    return described(bundle)


def described(bundle: dict, content_type: str = FHIR_JSON) -> dict:
    """The document entry's size and hash set to those of the FHIR document as serialized."""
    document = bundle["entry"][FHIR_DOCUMENT]["resource"]
    content = dump_json(document) if content_type == FHIR_JSON else resource_to_xml(document)
    attachment = bundle["entry"][DOCUMENT_ENTRY]["resource"]["content"][0]["attachment"]
    attachment.update(contentType=content_type, size=len(content),
                      hash=base64.b64encode(hashlib.sha1(content).digest()).decode())
    return bundle


def provided(client, bundle: dict) -> tuple[dict, str]:
    """The stored DocumentReference and the path of its FHIR document."""
    response = provide(client, bundle)
    assert response.status_code == 200, response.text
    document = response.json()["entry"][DOCUMENT_ENTRY]["resource"]
    return document, "/fhir/" + document["content"][0]["attachment"]["url"]


def attachment_where(field: str) -> str:
    return f"Bundle.entry[{DOCUMENT_ENTRY}].resource.content[0].attachment.{field}"


def test_example_is_provided_and_retrieved(client):
    bundle = example(VSM)
    document, url = provided(client, bundle)
    assert url.startswith("/fhir/Bundle/")
    stored = client.get(url, headers={"Accept": FHIR_JSON}).json()
    assert stored["type"] == "document" and stored["entry"][0]["resource"]["resourceType"] == "Composition"
    posted = bundle["entry"][FHIR_DOCUMENT]["resource"]
    assert {k: v for k, v in stored.items() if k not in ("id", "meta")} == posted
    assert document["content"][0]["attachment"]["hash"] == \
        base64.b64encode(hashlib.sha1(dump_json(posted)).digest()).decode()
    assert provide(client, example(VSM)).status_code == 200          # loaded again: nothing new


def test_fhir_document_in_xml(client):
    document, url = provided(client, described(fresh_vsm(), "application/fhir+xml"))
    assert document["content"][0]["attachment"]["contentType"] == "application/fhir+xml"
    assert client.get(url, headers={"Accept": "application/fhir+xml"}).status_code == 200


def test_hash_or_size_of_another_serialization_is_refused(client):
    bundle = fresh_vsm()
    bundle["entry"][DOCUMENT_ENTRY]["resource"]["content"][0]["attachment"]["contentType"] = "application/fhir+xml"
    response = provide(client, bundle)                 # size and hash of the JSON, declared as XML
    assert response.status_code == 422
    assert {attachment_where("size"), attachment_where("hash")} <= set(expressions(response.json()))
    bundle = fresh_vsm()
    bundle["entry"][FHIR_DOCUMENT]["resource"]["entry"][0]["resource"]["title"] = "Synthèse modifiée"
    response = provide(client, bundle)
    assert response.status_code == 422
    assert "FHIR document serialized as application/fhir+json" in diagnostics(response.json())


def test_fhir_document_must_be_a_document_described_in_a_known_media_type(client):
    bundle = fresh_vsm()
    bundle["entry"][FHIR_DOCUMENT]["resource"]["type"] = "collection"
    response = provide(client, described(bundle))
    assert response.status_code == 422
    assert expressions(response.json()) == [f"Bundle.entry[{FHIR_DOCUMENT}].resource.type"]
    bundle = fresh_vsm()
    bundle["entry"][DOCUMENT_ENTRY]["resource"]["content"][0]["attachment"]["contentType"] = "application/pdf"
    response = provide(client, bundle)
    assert response.status_code == 422
    assert expressions(response.json()) == [attachment_where("contentType")]


def test_fhir_document_nobody_describes_is_refused(client):
    bundle = fresh_vsm()
    orphan = copy.deepcopy(bundle["entry"][FHIR_DOCUMENT])
    orphan["fullUrl"] = "urn:uuid:4e8c2b17-6d3a-4f59-8c21-7a0b5e9d3cff"
    bundle["entry"].append(orphan)
    response = provide(client, bundle)
    assert response.status_code == 422
    assert expressions(response.json()) == ["Bundle.entry[3]"]


def test_stored_bundle_is_not_a_content(client):
    _, url = provided(client, fresh_vsm())
    bundle = fresh_vsm()
    del bundle["entry"][FHIR_DOCUMENT]
    bundle["entry"][DOCUMENT_ENTRY]["resource"]["content"][0]["attachment"]["url"] = url.removeprefix("/fhir/")
    response = provide(client, bundle)
    assert response.status_code == 422
    assert expressions(response.json()) == [attachment_where("url")]


def test_fhir_document_is_protected_like_its_entry(client, issuer_dir):
    document, url = provided(client, fresh_vsm())
    stranger = doctor(issuer_dir, STRANGER_DOCTOR)
    assert client.get(url, headers=stranger).status_code == 200
    mask = [{"op": "add", "path": "/securityLabel/-",
             "value": {"coding": [{"system": VISIBILITY, "code": "MASQUE_PS"}]}}]
    response = client.patch(f"/fhir/DocumentReference/{document['id']}", json=mask,
                            headers={**patient(issuer_dir), "Content-Type": "application/json-patch+json"})
    assert response.status_code == 200, response.text
    assert client.get(url, headers=stranger).status_code == 404
    assert client.get(url, headers=doctor(issuer_dir, GP)).status_code == 200          # the author
    assert client.get(url, headers=patient(issuer_dir)).status_code == 200


def test_fhir_document_does_not_change_and_goes_with_its_entry(client, issuer_dir):
    document, url = provided(client, fresh_vsm())
    stored = client.get(url).json()
    changed = copy.deepcopy(stored)
    changed["entry"][0]["resource"]["title"] = "Synthèse réécrite"
    assert client.put(url, json=changed).status_code == 405
    assert client.put(url, json=stored).status_code == 200                 # same content: a no-op version
    assert client.delete(url).status_code == 405
    other = {k: v for k, v in document.items() if k not in ("id", "meta", "identifier")}
    other["masterIdentifier"] = {"system": "urn:ietf:rfc:3986", "value": unique_oid()}
    response = client.post("/fhir/DocumentReference", json=other)
    assert response.status_code == 422
    assert expressions(response.json()) == ["DocumentReference.content[0].attachment.url"]
    response = client.delete(f"/fhir/DocumentReference/{document['id']}", headers=doctor(issuer_dir, GP))
    assert response.status_code == 200, response.text
    assert client.get(url).status_code == 410
