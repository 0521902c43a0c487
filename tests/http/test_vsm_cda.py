"""CDA R2 medical summary import (`POST Composition/$import-cda`): a French VSM as the CI-SIS
describes it, its entries in FHIR, the original kept, nothing silently dropped, and clear
refusals of malformed documents."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from fhir_server.access.devissuer import practitioner_claims
from tests.http.conftest import bearer, issue_expressions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LOINC = "http://loinc.org"
ELODIE_INS = "284037512345640"
DOCTOR_RPPS = "10003456786"

SECTIONS = {
    "problems": """
      <component><section>
        <code code="11450-4" codeSystem="2.16.840.1.113883.6.1" displayName="Problem list"/>
        <title>Pathologies en cours</title>
        <text><list><item>Hypertension artérielle essentielle</item>
          <item>Fatigue chronique (non codée)</item></list></text>
        <entry><act classCode="ACT" moodCode="EVN"><code nullFlavor="NA"/><statusCode code="active"/>
          <effectiveTime><low value="20190514"/></effectiveTime>
          <entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">
            <code code="55607006" codeSystem="2.16.840.1.113883.6.96" displayName="Problème"/>
            <effectiveTime><low value="20190514"/></effectiveTime>
            <value xsi:type="CD" code="I10" codeSystem="2.16.840.1.113883.6.3" displayName="Hypertension essentielle"/>
          </observation></entryRelationship></act></entry>
        <entry><act classCode="ACT" moodCode="EVN"><code nullFlavor="NA"/>
          <entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">
            <code code="55607006" codeSystem="2.16.840.1.113883.6.96"/>
            <value xsi:type="CD" nullFlavor="OTH"><originalText>Fatigue chronique</originalText></value>
          </observation></entryRelationship></act></entry>
      </section></component>""",
    "allergies": """
      <component><section>
        <code code="48765-2" codeSystem="2.16.840.1.113883.6.1"/>
        <title>Allergies et intolérances</title>
        <text>Allergie aux pénicillines</text>
        <entry><act classCode="ACT" moodCode="EVN"><code nullFlavor="NA"/>
          <entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">
            <code code="ALG" codeSystem="2.16.840.1.113883.5.4"/>
            <effectiveTime><low value="2008"/></effectiveTime>
            <participant typeCode="CSM"><participantRole classCode="MANU"><playingEntity classCode="MMAT">
              <code code="J01C" codeSystem="2.16.840.1.113883.6.73" displayName="Pénicillines"/>
            </playingEntity></participantRole></participant>
          </observation></entryRelationship></act></entry>
      </section></component>""",
    "medications": """
      <component><section>
        <code code="10160-0" codeSystem="2.16.840.1.113883.6.1"/>
        <title>Traitements</title>
        <text>Amlodipine 5 mg, 1 comprimé le matin</text>
        <entry><substanceAdministration classCode="SBADM" moodCode="EVN">
          <text>1 comprimé le matin</text>
          <effectiveTime xsi:type="IVL_TS"><low value="20190520"/></effectiveTime>
          <routeCode code="20053000" codeSystem="0.4.0.127.0.16.1.1.2.1" displayName="Voie orale"/>
          <doseQuantity value="1"/>
          <consumable><manufacturedProduct><manufacturedMaterial>
            <code code="C08CA01" codeSystem="2.16.840.1.113883.6.73" displayName="amlodipine"/>
            <name>AMLODIPINE 5 mg, comprimé</name>
          </manufacturedMaterial></manufacturedProduct></consumable>
        </substanceAdministration></entry>
      </section></component>""",
    "immunizations": """
      <component><section>
        <code code="11369-6" codeSystem="2.16.840.1.113883.6.1"/>
        <title>Vaccinations</title>
        <text>Rappel dTP le 12/09/2024 ; vaccin contre la fièvre jaune (code local)</text>
        <entry><substanceAdministration classCode="SBADM" moodCode="EVN" negationInd="false">
          <effectiveTime value="20240912"/>
          <consumable><manufacturedProduct><manufacturedMaterial>
            <code code="J07CA01" codeSystem="2.16.840.1.113883.6.73" displayName="diphtérie-poliomyélite-tétanos"/>
            <lotNumberText>X1234</lotNumberText>
          </manufacturedMaterial></manufacturedProduct></consumable>
          <entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">
            <code code="30973-2" codeSystem="2.16.840.1.113883.6.1" displayName="Rang de la vaccination"/>
            <value xsi:type="INT" value="4"/>
          </observation></entryRelationship>
        </substanceAdministration></entry>
        <entry><substanceAdministration classCode="SBADM" moodCode="EVN">
          <effectiveTime value="20150302"/>
          <consumable><manufacturedProduct><manufacturedMaterial>
            <code code="FJ-17" codeSystem="1.2.3.4.5" displayName="Fièvre jaune"/>
          </manufacturedMaterial></manufacturedProduct></consumable>
        </substanceAdministration></entry>
      </section></component>""",
    "devices": """
      <component><section>
        <code code="46264-8" codeSystem="2.16.840.1.113883.6.1"/>
        <title>Dispositifs médicaux</title>
        <text>Aucun dispositif médical</text>
      </section></component>""",
    "risks": """
      <component><section>
        <code code="10161-8" codeSystem="2.16.840.1.113883.6.1"/>
        <title>Facteurs de risque professionnels</title>
        <text>Exposition au bruit (atelier)</text>
      </section></component>""",
}


def vsm_cda(ins: str = ELODIE_INS, code: str = "60591-5", document_id: str = "VSM-2026-0001",
            sections: tuple[str, ...] = tuple(SECTIONS)) -> bytes:
    body = "".join(SECTIONS[name] for name in sections)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="FR"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <id root="1.2.250.1.213.1.1.9" extension="{document_id}"/>
  <code code="{code}" codeSystem="2.16.840.1.113883.6.1" displayName="Synthèse médicale"/>
  <title>Synthèse médicale</title>
  <effectiveTime value="20261120150000+0100"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <recordTarget><patientRole>
    <id root="1.2.250.1.213.1.4.8" extension="{ins}"/>
    <patient><name><given>Élodie</given><family>Lefèvre</family></name>
      <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/><birthTime value="19840317"/></patient>
  </patientRole></recordTarget>
  <author><time value="20261120150000+0100"/><assignedAuthor>
    <id root="1.2.250.1.71.4.2.1" extension="8{DOCTOR_RPPS}"/>
    <assignedPerson><name><prefix>Dr</prefix><given>Hélène</given><family>Bertrand</family></name></assignedPerson>
  </assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization>
    <id root="1.2.250.1.71.4.2.2" extension="1350000139"/><name>Centre hospitalier de démonstration</name>
  </representedCustodianOrganization></assignedCustodian></custodian>
  <documentationOf><serviceEvent><effectiveTime><low value="20190514"/><high value="20261120"/></effectiveTime>
    <performer typeCode="PRF"><assignedEntity><id root="1.2.250.1.71.4.2.1" extension="8{DOCTOR_RPPS}"/>
      <representedOrganization><standardIndustryClassCode code="SM54" displayName="Médecine générale (SM)"
        codeSystem="1.2.250.1.71.4.2.3"/></representedOrganization></assignedEntity></performer>
  </serviceEvent></documentationOf>
  <componentOf><encompassingEncounter><effectiveTime value="20261120"/><location><healthCareFacility>
    <code code="SA07" codeSystem="1.2.250.1.71.4.2.4" displayName="Cabinet individuel"/>
  </healthCareFacility></location></encompassingEncounter></componentOf>
  <component><structuredBody>{body}
  </structuredBody></component>
</ClinicalDocument>""".encode()


def as_binary(data: bytes, content_type: str = "text/xml") -> dict:
    return {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(data).decode()}


def parts(parameters: dict, name: str) -> list:
    return [p.get("resource") or p.get("valueReference") for p in parameters["parameter"] if p["name"] == name]


@pytest.fixture(scope="module")
def world(client):
    for name in ("patient-ins.json", "practitioner-rpps.json", "organization-finess.json"):
        resource = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
        assert client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource).status_code in (200, 201)
    return client


@pytest.fixture(scope="module")
def doctor(issuer_dir):
    return bearer(issuer_dir, practitioner_claims(DOCTOR_RPPS, "10"))


@pytest.fixture(scope="module")
def imported(world, doctor):
    response = world.post("/fhir/Composition/$import-cda", json=as_binary(vsm_cda()), headers=doctor)
    assert response.status_code == 200, response.text
    return response.json()


def read(client, reference: str) -> dict:
    return client.get(f"/fhir/{reference}", headers={"Accept": "application/fhir+json"}).json()


def test_coded_entries_become_fhir_resources(world, imported):
    created = {r["reference"].split("/")[0] for r in parts(imported, "created")}
    assert {"Binary", "DocumentReference", "Composition", "Condition", "AllergyIntolerance", "MedicationStatement",
            "Immunization"} <= created
    condition = next(read(world, r["reference"]) for r in parts(imported, "created")
                     if r["reference"].startswith("Condition/"))
    assert condition["code"]["coding"][0] == {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10",
                                              "display": "Hypertension essentielle"}
    assert condition["subject"] == {"reference": "Patient/exemple-patient-ins"}
    assert condition["onsetDateTime"] == "2019-05-14"
    immunization = next(read(world, r["reference"]) for r in parts(imported, "created")
                        if r["reference"].startswith("Immunization/"))
    assert immunization["vaccineCode"]["coding"][0]["code"] == "J07CA01"
    assert immunization["primarySource"] is False and immunization["lotNumber"] == "X1234"
    assert immunization["protocolApplied"] == [{"doseNumberPositiveInt": 4}]


def test_the_summary_lists_them_by_section(world, imported):
    [composition] = parts(imported, "composition")
    sections = {s["code"]["coding"][0]["code"]: s for s in composition["section"]}
    assert composition["subject"] == {"reference": "Patient/exemple-patient-ins"}
    assert composition["date"] == "2026-11-20T15:00:00+01:00"
    assert composition["author"][0]["identifier"] == {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810003456786"}
    assert [e["reference"].split("/")[0] for e in sections["11450-4"]["entry"]] == ["Condition"]
    assert sections["46264-8"]["emptyReason"]["coding"][0]["code"] == "nilknown"        # present, empty
    assert sections["47519-4"]["emptyReason"]["coding"][0]["code"] == "unavailable"     # absent from the CDA
    assert "Exposition au bruit" in sections["10161-8"]["text"]["div"]


def test_the_original_is_kept_and_shared(world, imported):
    [document] = parts(imported, "documentReference")
    assert document["status"] == "current"
    attachment = document["content"][0]["attachment"]
    original = vsm_cda()
    assert attachment["size"] == len(original)
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(original).digest()).decode()
    binary = read(world, attachment["url"])
    assert base64.b64decode(binary["data"]) == original
    assert document["masterIdentifier"] == {"system": "urn:oid:1.2.250.1.213.1.1.9", "value": "VSM-2026-0001"}


def test_nothing_is_dropped_silently(world, imported):
    [composition] = parts(imported, "composition")
    [document] = parts(imported, "documentReference")
    sources = next(s for s in composition["section"] if s["code"]["coding"][0]["code"] == "55107-7")
    assert sources["entry"] == [{"reference": f"DocumentReference/{document['id']}"}]
    [outcome] = parts(imported, "outcome")
    warnings = " ".join(i["diagnostics"] for i in outcome["issue"] if i["severity"] == "warning")
    assert "Pathologies en cours" in warnings and "Vaccinations" in warnings        # uncoded problem, local vaccine
    assert "Facteurs de risque professionnels" not in warnings                      # text only: kept as text


def test_the_imported_summary_is_a_document(world, imported, doctor):
    [composition] = parts(imported, "composition")
    response = world.get(f"/fhir/Composition/{composition['id']}/$document", headers=doctor)
    assert response.status_code == 200, response.text
    types = {e["resource"]["resourceType"] for e in response.json()["entry"]}
    assert {"Composition", "Patient", "Condition", "DocumentReference"} <= types


def test_a_new_summary_replaces_the_previous_one(world, imported, doctor):
    [previous] = parts(imported, "documentReference")
    response = world.post("/fhir/Composition/$import-cda", headers=doctor, json={
        "resourceType": "Parameters", "parameter": [{"name": "document", "valueAttachment": {
            "contentType": "application/xml",
            "data": base64.b64encode(vsm_cda(document_id="VSM-2026-0002")).decode()}}]})
    assert response.status_code == 200, response.text
    [current] = parts(response.json(), "documentReference")
    assert current["relatesTo"] == [{"code": "replaces",
                                     "target": {"reference": f"DocumentReference/{previous['id']}"}}]
    assert read(world, f"DocumentReference/{previous['id']}")["status"] == "superseded"


@pytest.mark.parametrize(("data", "why"), [
    (b"<ClinicalDocument xmlns='urn:hl7-org:v3'><title>", "not well-formed"),
    (b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><ClinicalDocument xmlns="urn:hl7-org:v3"/>', "DOCTYPE"),
    (b'<Bundle xmlns="http://hl7.org/fhir"/>', "not ClinicalDocument"),
    (vsm_cda(code="11488-4"), "not 60591-5"),
    (vsm_cda(ins="999999999999999"), "matches no patient"),
    (vsm_cda().replace(b'root="1.2.250.1.213.1.4.8"', b'root="1.2.3"'), "has no INS"),
    (vsm_cda().replace(b"<structuredBody>", b"<nonXMLBody><structuredBody>").replace(
        b"</structuredBody>", b"</structuredBody></nonXMLBody>"), "no structuredBody"),
])
def test_a_malformed_document_is_a_clear_422(world, doctor, data, why):
    response = world.post("/fhir/Composition/$import-cda", json=as_binary(data), headers=doctor)
    assert response.status_code == 422, response.text
    assert why in response.text


@pytest.mark.parametrize(("body", "status", "where"), [
    ({"resourceType": "Binary", "contentType": "text/xml", "data": "pas du base64 !"}, 400, "Binary.data"),
    (as_binary(b"%PDF-1.7", "application/pdf"), 415, "Binary.contentType"),
    ({"resourceType": "Parameters", "parameter": [{"name": "autre", "valueString": "x"}]}, 400, "Parameters.parameter"),
    ({"resourceType": "Patient"}, 400, "Binary"),
])
def test_a_wrong_request_says_what_to_send(world, doctor, body, status, where):
    response = world.post("/fhir/Composition/$import-cda", json=body, headers=doctor)
    assert response.status_code == status
    assert where in issue_expressions(response.json())


def test_import_changes_data_so_needs_post(world, doctor):
    assert world.get("/fhir/Composition/$import-cda", headers=doctor).status_code == 405
