"""Medical summary (VSM): the Composition rules, `$document`, and one current summary per patient.

A French example, Élodie Lefèvre's summary by her GP (examples/vsm), is loaded as a transaction and
turned into a document; the rules are then checked one by one with a practitioner's token."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fhir_server.access.devissuer import patient_claims, practitioner_claims
from tests.http.conftest import bearer, issue_expressions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INS = "urn:oid:1.2.250.1.213.1.4.8"
LOINC = "http://loinc.org"
ELODIE_INS = "284037512345640"
OTHER_INS = "190017512345678"
DOCTOR_RPPS = "10003456786"
VSM_TYPE = {"coding": [{"system": LOINC, "code": "60591-5", "display": "Patient summary Document"}]}
EMPTY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "nilknown"}]}
SECTIONS = {
    "11450-4": "Problem list - Reported",
    "48765-2": "Allergies and adverse reactions Document",
    "10160-0": "History of Medication use Narrative",
    "47519-4": "History of Procedures Document",
    "46264-8": "History of medical device use",
    "11369-6": "History of Immunization Narrative",
}


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


NARRATIVE = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Voir entrées</p></div>'


def section(code: str, *entries: str) -> dict:
    built = {"title": SECTIONS[code], "code": {"coding": [{"system": LOINC, "code": code, "display": SECTIONS[code]}]},
             "text": {"status": "generated", "div": NARRATIVE}}
    if entries:
        built["entry"] = [{"reference": e} for e in entries]
    else:
        built["emptyReason"] = EMPTY
    return built


def summary(patient: str = "exemple-patient-ins", **sections: list[str]) -> dict:
    """A complete summary of the patient; `sections` overrides the entries by LOINC code (with _ for -)."""
    entries = {"11450-4": ["Condition/exemple-vsm-hta"],
               "48765-2": ["AllergyIntolerance/exemple-vsm-allergie-penicilline"],
               "10160-0": ["MedicationStatement/exemple-vsm-amlodipine"], "47519-4": [], "46264-8": []}
    entries.update({code.replace("_", "-"): refs for code, refs in sections.items()})
    return {
        "resourceType": "Composition",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0d9e1a2b-1111-4c3d-8e9f-000000000001"},
        "status": "final", "type": VSM_TYPE, "subject": {"reference": f"Patient/{patient}"},
        "date": "2026-11-21T10:00:00+01:00", "author": [{"reference": "Practitioner/exemple-medecin-generaliste"}],
        "title": "Synthèse médicale", "custodian": {"reference": "Organization/exemple-centre-hospitalier"},
        "event": [{"period": {"start": "2026-11-21"}}],
        "section": [section(code, *refs) for code, refs in entries.items()],
    }


def another_patient(patient_id: str, ins: str) -> dict:
    """Another patient meeting FR Core Patient INS, as the summary profile wants of its subject."""
    patient = example("patient-ins.json")
    patient["id"] = patient_id
    for identifier in patient["identifier"]:
        if identifier.get("system") == INS:
            identifier["value"] = ins
    return patient


@pytest.fixture(scope="module")
def world(client):
    for name in ("patient-ins.json", "practitioner-rpps.json", "organization-finess.json", "immunization-dtcap.json"):
        resource = example(name)
        assert client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource).status_code in (200, 201)
    response = client.post("/fhir", json=example("vsm/vsm-transaction-lefevre.json"))
    assert response.status_code == 200, response.text
    other = another_patient("vsm-autre-patient", OTHER_INS)
    assert client.put("/fhir/Patient/vsm-autre-patient", json=other).status_code in (200, 201)
    foreign = copy.deepcopy(example("vsm/vsm-transaction-lefevre.json")["entry"][0]["resource"])
    foreign.update(id="vsm-autre-hta", subject={"reference": "Patient/vsm-autre-patient"})
    assert client.put("/fhir/Condition/vsm-autre-hta", json=foreign).status_code in (200, 201)
    return client


@pytest.fixture(scope="module")
def doctor(issuer_dir):
    return bearer(issuer_dir, practitioner_claims(DOCTOR_RPPS, "10"))


@pytest.fixture(scope="module")
def elodie(issuer_dir):
    return bearer(issuer_dir, patient_claims(ELODIE_INS))


def create(client, resource: dict, headers: dict):
    return client.post("/fhir/Composition", json=resource, headers=headers)


def refused_at(response, path: str) -> bool:
    """422 with an issue at `path` (or inside it). The profile espace-vsm-composition, enforced before
    the business rules, may be the one that refuses: the exact messages of the rules are checked in
    tests/unit/test_pillars_vsm_rules.py."""
    return response.status_code == 422 and any(e.startswith(path) for e in issue_expressions(response.json()))


# -- the rules --------------------------------------------------------------------------------------
def test_a_complete_summary_is_accepted(world, doctor):
    response = create(world, summary(**{"11369_6": ["Immunization/exemple-vaccination-rappel-dtp"]}), doctor)
    assert response.status_code == 201, response.text


def test_a_missing_mandatory_section_is_named(world, doctor):
    composition = summary()
    composition["section"] = [s for s in composition["section"] if s["code"]["coding"][0]["code"] != "46264-8"]
    assert refused_at(create(world, composition, doctor), "Composition.section")


def test_an_empty_mandatory_section_needs_an_empty_reason(world, doctor):
    composition = summary()
    del composition["section"][3]["emptyReason"]
    assert refused_at(create(world, composition, doctor), "Composition.section[3]")


def test_a_section_with_entries_has_no_empty_reason(world, doctor):
    composition = summary()
    composition["section"][0]["emptyReason"] = EMPTY
    assert refused_at(create(world, composition, doctor), "Composition.section[0]")


def test_a_section_appears_once(world, doctor):
    composition = summary()
    composition["section"].append(copy.deepcopy(composition["section"][0]))
    assert refused_at(create(world, composition, doctor), "Composition.section")


@pytest.mark.parametrize(("entries", "why"), [
    (["Condition/vsm-autre-hta"], "belongs to Patient/vsm-autre-patient, not to Patient/exemple-patient-ins"),
    (["Condition/nexiste-pas"], "Condition/nexiste-pas does not exist or you may not read it"),
    (["Procedure/exemple-vsm-appendicectomie"], "Procedure"),
    (["#contenu"], "contained"),
])
def test_every_entry_is_a_resource_of_the_same_patient_that_the_section_holds(world, doctor, entries, why):
    response = create(world, summary(**{"11450_4": entries}), doctor)
    assert refused_at(response, "Composition.section[0].entry[0]")
    assert why in response.text


def test_the_subject_is_a_patient(world, doctor):
    composition = summary()
    composition["subject"] = {"reference": "Group/famille"}
    assert refused_at(create(world, composition, doctor), "Composition.subject")


def test_a_summary_replaces_a_summary_of_the_same_patient(world, doctor):
    other = summary("vsm-autre-patient", **{"11450_4": ["Condition/vsm-autre-hta"], "48765_2": [], "10160_0": []})
    previous = create(world, other, doctor).json()
    composition = summary()
    composition["relatesTo"] = [{"code": "replaces", "targetReference": {"reference": f"Composition/{previous['id']}"}}]
    assert refused_at(create(world, composition, doctor), "Composition.relatesTo[0].targetReference")
    composition["relatesTo"][0]["targetReference"]["reference"] = "Composition/exemple-vsm-lefevre"
    assert create(world, composition, doctor).status_code == 201


def test_an_update_is_held_to_the_same_rules(world, doctor):
    current = world.get("/fhir/Composition/exemple-vsm-lefevre").json()
    current["section"][0]["entry"].append({"reference": "Condition/vsm-autre-hta"})
    response = world.put("/fhir/Composition/exemple-vsm-lefevre", json=current, headers=doctor)
    assert refused_at(response, "Composition.section[0].entry[2]")
    assert "belongs to Patient/vsm-autre-patient" in response.text


def test_other_compositions_are_not_summaries(world, doctor):
    letter = {"resourceType": "Composition", "status": "final",
              "type": {"coding": [{"system": LOINC, "code": "11488-4", "display": "Consult note"}]},
              "subject": {"reference": "Patient/exemple-patient-ins"}, "date": "2026-11-21",
              "author": [{"reference": "Practitioner/exemple-medecin-generaliste"}], "title": "Courrier"}
    assert create(world, letter, doctor).status_code == 201


# -- $document --------------------------------------------------------------------------------------
def test_document_bundle_of_the_example(world, elodie):
    response = world.get("/fhir/Composition/exemple-vsm-lefevre/$document", headers=elodie)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["type"] == "document"
    assert document["identifier"]["system"] == "urn:ietf:rfc:3986" and document["timestamp"]
    entries = [e["resource"] for e in document["entry"]]
    assert entries[0]["resourceType"] == "Composition" and entries[0]["id"] == "exemple-vsm-lefevre"
    expected = {f"{e['resource']['resourceType']}/{e['resource']['id']}"
                for e in example("vsm/vsm-document-lefevre.json")["entry"]}
    assert {f"{r['resourceType']}/{r['id']}" for r in entries} == expected
    assert all(e["fullUrl"] == f"http://testserver/fhir/{e['resource']['resourceType']}/{e['resource']['id']}"
               for e in document["entry"])


def test_a_document_never_includes_another_patients_record(world, doctor):
    patient = world.get("/fhir/Patient/exemple-patient-ins").json()
    patient["link"] = [{"other": {"reference": "Patient/vsm-autre-patient"}, "type": "seealso"}]
    assert world.put("/fhir/Patient/exemple-patient-ins", json=patient).status_code == 200
    try:
        document = world.get("/fhir/Composition/exemple-vsm-lefevre/$document", headers=doctor).json()
        assert "Patient/vsm-autre-patient" not in {f"{e['resource']['resourceType']}/{e['resource']['id']}"
                                                   for e in document["entry"]}
    finally:
        del patient["link"]
        world.put("/fhir/Patient/exemple-patient-ins", json=patient)


def test_a_document_whose_references_cannot_be_read_is_refused(world, doctor):
    letter = {"resourceType": "Composition", "status": "final",
              "type": {"coding": [{"system": LOINC, "code": "11488-4"}]},
              "subject": {"reference": "Patient/exemple-patient-ins"},
              "date": "2026-11-21", "author": [{"reference": "Practitioner/inconnu"}], "title": "Courrier"}
    created = create(world, letter, doctor).json()
    response = world.get(f"/fhir/Composition/{created['id']}/$document", headers=doctor)
    assert response.status_code == 422
    assert "Practitioner/inconnu" in response.text


def test_document_of_an_unknown_composition(world, doctor):
    assert world.get("/fhir/Composition/inconnue/$document", headers=doctor).status_code == 404


def test_persisting_needs_post(world, doctor):
    response = world.get("/fhir/Composition/exemple-vsm-lefevre/$document?persist=true", headers=doctor)
    assert response.status_code == 405


def current_summaries(client, patient: str = "exemple-patient-ins") -> list[dict]:
    found = client.get("/fhir/DocumentReference", params={"patient": patient, "type": f"{LOINC}|60591-5",
                                                         "status": "current"}).json()
    return [e["resource"] for e in found.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def test_a_persisted_summary_is_shared_and_replaces_the_previous_one(world, doctor):
    first = world.post("/fhir/Composition/exemple-vsm-lefevre/$document?persist=true", headers=doctor)
    assert first.status_code == 200, first.text
    stored = first.json()
    assert world.get(f"/fhir/Bundle/{stored['id']}").json()["identifier"] == stored["identifier"]
    [shared] = current_summaries(world)
    attachment = shared["content"][0]["attachment"]
    assert attachment["contentType"] == "application/fhir+json" and attachment["url"] == f"Bundle/{stored['id']}"
    assert shared["context"]["related"] == [{"reference": "Composition/exemple-vsm-lefevre"}]
    assert shared["masterIdentifier"] == stored["identifier"]

    newer = summary(**{"11369_6": ["Immunization/exemple-vaccination-rappel-dtp"]})
    newer["relatesTo"] = [{"code": "replaces", "targetReference": {"reference": "Composition/exemple-vsm-lefevre"}}]
    composition = create(world, newer, doctor).json()
    second = world.post(f"/fhir/Composition/{composition['id']}/$document",
                        json={"resourceType": "Parameters", "parameter": [{"name": "persist", "valueBoolean": True}]},
                        headers=doctor)
    assert second.status_code == 200, second.text
    [current] = current_summaries(world)
    assert current["content"][0]["attachment"]["url"] == f"Bundle/{second.json()['id']}"
    assert current["relatesTo"] == [{"code": "replaces", "target": {"reference": f"DocumentReference/{shared['id']}"}}]
    assert world.get(f"/fhir/DocumentReference/{shared['id']}").json()["status"] == "superseded"
    # the replaced summary stays readable, and so does its earlier version in history
    assert world.get(f"/fhir/DocumentReference/{shared['id']}/_history/1").json()["status"] == "current"


def test_the_patient_reads_their_shared_summary(world, elodie):
    found = world.get("/fhir/DocumentReference", params={"patient": "Patient/exemple-patient-ins", "status": "current",
                                                          "type": f"{LOINC}|60591-5"}, headers=elodie).json()
    assert [e["resource"]["subject"]["reference"] for e in found.get("entry", [])] == ["Patient/exemple-patient-ins"]



def test_a_persisted_document_is_private_to_the_patient(world, doctor, issuer_dir):
    stored = world.post("/fhir/Composition/exemple-vsm-lefevre/$document?persist=true", headers=doctor).json()
    stranger = bearer(issuer_dir, patient_claims(OTHER_INS))
    assert world.get(f"/fhir/Bundle/{stored['id']}", headers=stranger).status_code == 404


def test_a_stored_document_belongs_to_the_patient_it_names_by_urn(world, elodie, issuer_dir):
    """Inside a document Bundle the Composition's subject is a `urn:uuid:` entry: the stored
    document still belongs to that patient's record (found by INS) and is hidden from others."""
    document = example("bundle-vsm-synthese-medicale.json")
    assert document["entry"][0]["resource"]["subject"]["reference"].startswith("urn:uuid:")
    stored = world.put(f"/fhir/Bundle/{document['id']}", json=document)
    assert stored.status_code in (200, 201), stored.text
    assert world.get(f"/fhir/Bundle/{document['id']}", headers=elodie).status_code == 200
    someone_else = bearer(issuer_dir, patient_claims(OTHER_INS))
    insurer = bearer(issuer_dir, {"sub": "cpam", "actor": "insurer", "scope": "user/*.cruds"})
    for stranger in (someone_else, insurer):
        assert world.get(f"/fhir/Bundle/{document['id']}", headers=stranger).status_code == 404
        found = world.get("/fhir/Bundle", params={"_id": document["id"], "_total": "accurate"}, headers=stranger)
        assert found.json()["total"] == 0
