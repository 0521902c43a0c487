"""The pure parts of the document sharing rules: which paths a metadata update touches, the
ITI-67 / ITI-66 search rule, how a provide bundle's entries are classified."""

from __future__ import annotations

import copy

import pytest

from fhir_server.engine.errors import FhirError
from fhir_server.engine.model import RequestContext
from fhir_server.mhd.entry_uuid import entry_uuid, entry_uuid_problems, with_entry_uuid
from fhir_server.mhd.find import require_patient_and_status, rewrite_find
from fhir_server.mhd.metadata import first_change_outside_metadata
from fhir_server.mhd.provide import DOCUMENT_REFS, DOCUMENTS, FOLDERS, SUBMISSION_SET, _classify, is_provide_bundle
from fhir_server.mhd.unique_ids import unique_ids

MHD_LISTS = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
DOCUMENT = {
    "resourceType": "DocumentReference", "id": "d1", "meta": {"versionId": "1"}, "status": "current",
    "securityLabel": [{"coding": [{"code": "N"}]}],
    "extension": [{"url": "http://example.org/other", "valueString": "x"}],
    "content": [{"attachment": {"title": "CR", "url": "Binary/b1"}}],
}


def changed(**changes) -> dict:
    document = copy.deepcopy(DOCUMENT)
    document.update(changes)
    return document


@pytest.mark.parametrize("new", [
    changed(status="superseded"),
    changed(securityLabel=[{"coding": [{"code": "N"}]}, {"coding": [{"code": "MASQUE_PS"}]}]),
    changed(extension=[*DOCUMENT["extension"], {"url": ARCHIVED, "valueBoolean": True}]),
    changed(meta={"versionId": "2", "lastUpdated": "2026-11-23T10:00:00Z"}),
])
def test_metadata_changes(new):
    assert first_change_outside_metadata(DOCUMENT, new) is None


@pytest.mark.parametrize(("new", "path"), [
    (changed(description="x"), "description"),
    (changed(content=[{"attachment": {"title": "Autre", "url": "Binary/b1"}}]), "content[0].attachment.title"),
    (changed(content=[]), "content"),
    (changed(extension=[{"url": ARCHIVED, "valueBoolean": True}]), "extension"),
])
def test_other_changes(new, path):
    assert first_change_outside_metadata(DOCUMENT, new) == path


CTX = RequestContext(base_url="http://x/fhir")


@pytest.mark.parametrize("params", [
    [("patient", "Patient/p1"), ("status", "current")],
    [("patient.identifier", "urn:oid:1.2.250.1.213.1.4.8|1"), ("status:not", "superseded")],
    [("patient:Patient", "p1"), ("status", "current,superseded"), ("type", "http://loinc.org|11488-4")],
    [("_id", "d1,d2")],
])
def test_find_document_references_with_patient_and_status(params):
    require_patient_and_status(CTX, "DocumentReference", params)


@pytest.mark.parametrize(("resource_type", "params", "missing"), [
    ("DocumentReference", [("status", "current")], "patient"),
    ("DocumentReference", [("subject", "Patient/p1"), ("status", "current")], "patient"),
    ("DocumentReference", [("patient", "p1"), ("status", " ")], "status"),
    ("List", [("patient", "p1"), ("code", "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|folder")],
     "status"),
    ("List", [("status", "current"), ("designationType", "x")], "patient"),
])
def test_find_without_patient_or_status(resource_type, params, missing):
    with pytest.raises(FhirError) as raised:
        require_patient_and_status(CTX, resource_type, params)
    assert raised.value.status == 400
    assert raised.value.issues[0].expression == (missing,)


def test_other_searches_are_left_alone():
    require_patient_and_status(CTX, "List", [("patient", "p1")])
    require_patient_and_status(CTX, "Observation", [("code", "x")])


SUBMISSION = {"resourceType": "List", "code": {"coding": [
    {"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "code": "submissionset"}]}}
FOLDER = {"resourceType": "List", "code": {"coding": [
    {"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "code": "folder"}]}}


@pytest.mark.parametrize(("method", "url", "resource", "kind"), [
    ("POST", "List", SUBMISSION, SUBMISSION_SET),
    ("PUT", "List/x", SUBMISSION, None),
    ("PUT", "List/x", FOLDER, FOLDERS),
    ("POST", "DocumentReference", {"resourceType": "DocumentReference"}, DOCUMENT_REFS),
    ("PUT", "DocumentReference/x", {"resourceType": "DocumentReference"}, None),
    ("PUT", "Binary/x", {"resourceType": "Binary"}, DOCUMENTS),
    ("PATCH", "DocumentReference/x", {"resourceType": "Parameters"}, "UpdateDocumentRefs"),
    ("PATCH", "Patient/x", {"resourceType": "Parameters"}, None),
    ("GET", "Patient?identifier=x", None, "Patient"),
    ("POST", "Observation", {"resourceType": "Observation"}, None),
])
def test_entry_classification(method, url, resource, kind):
    raw = {"request": {"method": method, "url": url}}
    if resource:
        raw["resource"] = resource
    assert _classify(raw) == kind


def test_provide_bundle_detection():
    claimed = {"resourceType": "Bundle", "type": "transaction", "meta": {"profile": [
        "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Comprehensive.ProvideBundle"]}, "entry": []}
    by_content = {"resourceType": "Bundle", "type": "transaction",
                  "entry": [{"request": {"method": "POST", "url": "List"}, "resource": SUBMISSION}]}
    assert is_provide_bundle(claimed) and is_provide_bundle(by_content)
    assert not is_provide_bundle({**by_content, "type": "batch"})
    assert not is_provide_bundle({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "List"}, "resource": {"resourceType": "List"}}]})


# -- ITI-67 / ITI-66 rewrites ----------------------------------------------------------------------------
@pytest.mark.parametrize(("resource_type", "params", "expected"), [
    ("DocumentReference", [("patient", "Patient/p"), ("author.given", "Jean"), ("author.family:exact", "Dupont")],
     [("patient", "Patient/p"), ("author-given", "Jean"), ("author-family:exact", "Dupont"), ("_total", "accurate")]),
    ("DocumentReference", [("patient", "Patient/p"), ("_total", "none")],
     [("patient", "Patient/p"), ("_total", "none")]),
    ("List", [("patient", "Patient/p"), ("code", "submissionset")],
     [("patient", "Patient/p"), ("code", "submissionset"), ("_total", "accurate")]),
    ("List", [("patient", "Patient/p")], [("patient", "Patient/p")]),                 # not an MHD list search
    ("Practitioner", [("given", "Jean")], [("given", "Jean")]),
])
def test_find_rewrite(resource_type, params, expected):
    assert rewrite_find(resource_type, params) == expected


# -- entryUUID and unique ids ------------------------------------------------------------------------------
UUID = "urn:uuid:5c1d7c3e-8a51-4f0e-9d3b-6e2f1a7b9c01"


def test_entry_uuid_is_assigned_kept_or_left_alone():
    folder = {"resourceType": "List", "code": {"coding": [{"system": MHD_LISTS, "code": "folder"}]},
              "identifier": [{"use": "usual", "system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"}]}
    assigned = with_entry_uuid(folder)
    assert assigned["identifier"][0] == folder["identifier"][0] and len(folder["identifier"]) == 1
    assert assigned["identifier"][1]["use"] == "official" and assigned["identifier"][1]["value"].startswith("urn:uuid:")
    assert entry_uuid(with_entry_uuid(folder, kept=UUID)) == UUID
    assert with_entry_uuid(assigned) is assigned


@pytest.mark.parametrize(("identifiers", "problems"), [
    ([{"use": "official", "system": "urn:ietf:rfc:3986", "value": UUID}], 0),
    ([{"use": "official", "value": "urn:oid:1.2.250.1"}], 1),
    ([{"type": {"coding": [{"code": "entryUUID"}]}, "system": "urn:oid:1.2", "value": UUID}], 1),
    ([{"use": "official", "value": UUID}, {"use": "official", "value": UUID}], 1),
    ([{"use": "usual", "value": "urn:oid:1.2.250.1"}], 0),
])
def test_entry_uuid_problems(identifiers, problems):
    document = {"resourceType": "DocumentReference", "identifier": identifiers}
    assert len(entry_uuid_problems(document, "DocumentReference")) == problems


def test_unique_ids_of_entries():
    document = {"resourceType": "DocumentReference", "masterIdentifier": {"system": "urn:ietf:rfc:3986",
                                                                           "value": "urn:oid:1.2.3"},
                "identifier": [{"use": "usual", "value": "x"}, {"use": "official", "value": UUID}]}
    assert unique_ids("DocumentReference", document) == {
        "masterIdentifier|urn:ietf:rfc:3986|urn:oid:1.2.3": "DocumentReference.masterIdentifier",
        f"entryUUID|{UUID}": "DocumentReference.identifier[1]"}
    assert unique_ids("List", {"resourceType": "List", "identifier": [{"use": "official", "value": UUID}]}) == {}
