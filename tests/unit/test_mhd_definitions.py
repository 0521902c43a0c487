"""Our PDSm / MHD definitions (profiles/pdsm/) load, generate their snapshots, and say what PDSm
says; the example payloads (examples/mhd/) conform to them; the CapabilityStatement addition."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pytest

from fhir_server.definitions import load_definitions
from fhir_server.mhd import canonical
from fhir_server.mhd.capability import amend_capability_statement
from fhir_server.mhd.profiles import ProfileCheck
from fhir_server.mhd.publish import comprehensive
from fhir_server.validation import ensure_snapshot

ROOT = Path(__file__).resolve().parents[2]
PDSM_FILES = sorted((ROOT / "profiles" / "pdsm").glob("StructureDefinition-*.json"))
EXAMPLES = sorted((ROOT / "examples" / "mhd").glob("*.json"))


@pytest.fixture(scope="module")
def check() -> ProfileCheck:
    return ProfileCheck(load_definitions())


@pytest.mark.parametrize("path", PDSM_FILES, ids=lambda p: p.stem)
def test_snapshot_is_generated(path):
    definitions = load_definitions()
    url = json.loads(path.read_text(encoding="utf-8"))["url"]
    snapshot = ensure_snapshot(definitions.structures[url], definitions)
    assert snapshot["snapshot"]["element"]


def element(url: str, element_id: str) -> dict:
    definitions = load_definitions()
    snapshot = ensure_snapshot(definitions.structures[url], definitions)
    return next(e for e in snapshot["snapshot"]["element"] if e["id"] == element_id)


@pytest.mark.parametrize(("element_id", "minimum", "maximum"), [
    ("DocumentReference.masterIdentifier", 1, "1"),
    ("DocumentReference.custodian", 1, "1"),
    ("DocumentReference.securityLabel", 1, "*"),
    ("DocumentReference.content.attachment.data", 0, "0"),
    ("DocumentReference.content.attachment.hash", 1, "1"),
    ("DocumentReference.content.attachment.size", 1, "1"),
    ("DocumentReference.context.period.start", 1, "1"),
    ("DocumentReference.extension:isArchived", 0, "1"),
])
def test_comprehensive_document_reference(element_id, minimum, maximum):
    rule = element(canonical.COMPREHENSIVE_DOCUMENT, element_id)
    assert (rule["min"], rule["max"]) == (minimum, maximum)


def test_status_binding_and_list_types():
    assert element(canonical.COMPREHENSIVE_DOCUMENT, "DocumentReference.status")["binding"]["valueSet"] == \
        "https://profiles.ihe.net/ITI/MHD/ValueSet/DocumentReferenceStats"
    code = element(canonical.SUBMISSION_SET, "List.code")["patternCodeableConcept"]
    assert code["coding"][0]["code"] == "submissionset"
    assert element(canonical.SIMPLIFIED_PUBLISH, "DocumentReference.content.attachment.data")["min"] == 1


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_conform(check, path):
    resource = json.loads(path.read_text(encoding="utf-8"))
    if resource["resourceType"] == "DocumentReference":
        assert check.errors(resource, canonical.SIMPLIFIED_PUBLISH) == []
        return
    assert check.errors(resource, canonical.PROVIDE_BUNDLE) == []
    for entry in resource["entry"]:
        profiles = (entry["resource"].get("meta") or {}).get("profile", [])
        for profile in profiles:
            assert check.errors(entry["resource"], profile) == [], entry["fullUrl"]


def test_simplified_publication_becomes_a_comprehensive_entry(check):
    posted = json.loads((ROOT / "examples" / "mhd" / "06-iti105-photo-patient.json").read_text(encoding="utf-8"))
    content = base64.b64decode(posted["content"][0]["attachment"]["data"])
    stored = comprehensive(copy.deepcopy(posted), content, "urn:uuid:0b5e3a4c-0000-4000-8000-000000000001")
    assert check.errors(stored, canonical.COMPREHENSIVE_DOCUMENT) == []
    attachment = stored["content"][0]["attachment"]
    assert "data" not in attachment and attachment["size"] == len(content)
    assert stored["securityLabel"][0]["coding"][0]["code"] == "N"
    assert stored["context"]["period"]["start"] == attachment["creation"]


def test_capability_statement_declares_the_pdsm_server_role():
    statement = {"resourceType": "CapabilityStatement", "rest": [{
        "mode": "server", "interaction": [{"code": "transaction"}],
        "resource": [{"type": "DocumentReference", "searchParam": [{"name": "patient"}, {"name": "type"}]},
                     {"type": "Binary"}, {"type": "Patient"}]}]}
    amended = amend_capability_statement(statement)
    assert amended["instantiates"] == [canonical.SERVER_CAPABILITY]
    rest = amended["rest"][0]
    assert "ITI-65" in rest["documentation"] and canonical.PROVIDE_BUNDLE in rest["interaction"][0]["documentation"]
    documents, binary, patient = rest["resource"]
    assert "ITI-67" in documents["documentation"] and "ITI-68" in binary["documentation"]
    assert "documentation" not in patient
    assert documents["searchParam"][0]["documentation"].startswith("ITI-67: required")
    assert "documentation" not in statement["rest"][0]                   # the input is left alone
