"""The readable summary of an AuditEvent shown in the patient's access history."""

from __future__ import annotations

from datetime import UTC, datetime

from fhir_server.access.actor import Actor
from fhir_server.access.scopes import Scopes
from fhir_server.audit import AuditRecord, build_events, summarise
from fhir_server.audit.codes import SUMMARY_URL

WHEN = datetime(2025, 3, 4, 10, 15, tzinfo=UTC)
DOCTOR = Actor("practitioner", "psc", Scopes.parse(""), rpps="10001234567", profession="60", organization="750712184",
               purpose_of_use="TREAT", client_id="logiciel-cabinet", name="Anne Leroy")
PATIENT = Actor("patient", "ins", Scopes.parse(""), ins="1850575123456", client_id="app", name="Élodie Martin")


def event(record: AuditRecord) -> dict:
    return build_events(record, "espace")[0].resource


def test_read_of_a_titled_document() -> None:
    summary = summarise(event(AuditRecord(
        "read", 200, actor=DOCTOR, resource_type="DocumentReference", resource_id="d", patients=["Patient/p1"],
        data_titles={"DocumentReference/d": "Compte rendu de biologie"}, recorded=WHEN)), "Patient/p1")
    assert summary.text == ("2025-03-04T10:15:00.000Z: Anne Leroy (RPPS 10001234567, Infirmier, organisation FINESS "
                            "750712184) read Compte rendu de biologie using logiciel-cabinet")
    assert (summary.how, summary.rpps, summary.organization, summary.software) == (
        "read", "10001234567", "750712184", "logiciel-cabinet")
    assert summary.profession["code"] == "60"


def test_search_lists_resource_types_without_titles() -> None:
    summary = summarise(event(AuditRecord(
        "search-type", 200, actor=DOCTOR, query="Observation?patient=p1", patients=["Patient/p1"],
        data_references=["Observation/o1", "Observation/o2"], recorded=WHEN)), "Patient/p1")
    assert summary.how == "search-type"
    assert summary.what == ["Observation", "Observation"]
    assert "searched Observation, Observation" in summary.text


def test_emergency_and_refusal_are_told() -> None:
    emergency = summarise(event(AuditRecord("read", 200, actor=DOCTOR, patients=["Patient/p1"], emergency=True,
                                            resource_type="Patient", resource_id="p1", recorded=WHEN)))
    assert emergency.emergency and emergency.text.endswith(", as an emergency access")
    refused = summarise(event(AuditRecord("read", 403, actor=DOCTOR, patients=["Patient/p1"], consent_denied=True,
                                          consent_references=["Consent/c"], recorded=WHEN)))
    assert refused.refused and refused.how == "consent-refused"
    assert "was refused access to your record by your consent settings" in refused.text


def test_own_access_reads_as_you() -> None:
    summary = summarise(event(AuditRecord("create", 201, actor=PATIENT, patients=["Patient/p1"],
                                          actor_patients=["Patient/p1"], resource_type="DocumentReference",
                                          resource_id="x", data_titles={"DocumentReference/x": "Mon ordonnance"},
                                          recorded=WHEN)), "Patient/p1")
    assert summary.self_access
    assert summary.text == "2025-03-04T10:15:00.000Z: You added Mon ordonnance"


def test_extension_form() -> None:
    summary = summarise(event(AuditRecord("read", 200, actor=DOCTOR, patients=["Patient/p1"], recorded=WHEN)))
    extension = summary.to_extension()
    assert extension["url"] == SUMMARY_URL
    parts = {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in extension["extension"]}
    assert parts["who"] == "Anne Leroy"
    assert parts["rpps"] == {"system": "https://rpps.esante.gouv.fr", "value": "10001234567"}
    assert parts["organization"] == {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1750712184"}  # 1 + FINESS
    assert parts["when"] == "2025-03-04T10:15:00.000Z"
    assert parts["emergency"] is False and parts["refused"] is False
