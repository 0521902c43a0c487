"""The AuditEvents built for each kind of interaction (IHE BALP patterns in the ANS TDE profile),
compared element by element, without a database."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from fhir_server.access.actor import Actor
from fhir_server.access.scopes import Scopes
from fhir_server.audit import AuditRecord, build_events, outcome_code
from fhir_server.audit.chain import with_chain

WHEN = datetime(2025, 3, 4, 10, 15, 30, 123000, tzinfo=UTC)
AT = "2025-03-04T10:15:30.123Z"

TDE = "https://interop.esante.gouv.fr/ig/fhir/tde/StructureDefinition/tde-auditevent"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
REST = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
        "display": "Restful Operation"}
SECURITY_ALERT = {"system": DCM, "code": "110113", "display": "Security Alert"}
APPLICATION = {"system": DCM, "code": "110150", "display": "Application"}
DESTINATION = {"system": DCM, "code": "110152", "display": "Destination Role ID"}
SOURCE_ROLE = {"system": DCM, "code": "110153", "display": "Source Role ID"}
IRCP = {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP",
        "display": "information recipient"}
AUT = {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "AUT",
       "display": "author (originator)"}
MEDECIN = {"system": "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante",
           "code": "10", "display": "Médecin"}
TREAT = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT", "display": "treatment"}
ETREAT = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT",
          "display": "Emergency Treatment"}
PERSON = {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"}
SYSTEM_OBJECT = {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                 "display": "System Object"}
ROLE_PATIENT = {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}
ROLE_REPORT = {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "3", "display": "Report"}
ROLE_DOMAIN = {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4",
               "display": "Domain Resource"}
ROLE_QUERY = {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query"}
SOURCE = {
    "site": "espace",
    "observer": {"type": "Device", "identifier": {"system": "https://espace.example.org/fhir/sid/server",
                                                  "value": "espace"}, "display": "espace"},
    "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
              "display": "Application Server"}],
}
ORGANIZATION = {"url": "https://espace.example.org/fhir/StructureDefinition/audit-agent-organization",
                "valueReference": {"type": "Organization",
                                   "identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1750712184"}}}


def rest(code: str) -> dict:
    return {"system": "http://hl7.org/fhir/restful-interaction", "code": code, "display": code}


def doctor(purpose: str = "TREAT") -> Actor:
    return Actor("practitioner", "psc-10001234567", Scopes.parse("user/*.rs"), rpps="10001234567", profession="10",
                 organization="750712184", purpose_of_use=purpose, client_id="logiciel-cabinet", name="Jean Dupont")


def patient_actor() -> Actor:
    return Actor("patient", "ins-1850575123456", Scopes.parse("patient/*.cruds"), ins="1850575123456",
                 client_id="app-mon-espace", name="Élodie Martin")


def doctor_agent(purpose: dict = TREAT) -> dict:
    return {
        "extension": [ORGANIZATION],
        "type": {"coding": [IRCP]},
        "role": [{"coding": [MEDECIN]}],
        "who": {"identifier": {"system": "https://rpps.esante.gouv.fr", "value": "10001234567"},
                "display": "Jean Dupont"},
        "altId": "psc-10001234567",
        "name": "Jean Dupont",
        "requestor": True,
        "purposeOfUse": [{"coding": [purpose]}],
    }


def client_agent(*roles: dict, software: str = "logiciel-cabinet", address: str | None = "192.0.2.10") -> dict:
    agent: dict = {
        "type": {"coding": [APPLICATION, *roles]},
        "who": {"identifier": {"system": "https://espace.example.org/fhir/sid/client-id", "value": software},
                "display": software},
        "requestor": False,
    }
    if address:
        agent["network"] = {"address": address, "type": "2"}
    return agent


def patient_entity(reference: str) -> dict:
    return {"what": {"reference": reference}, "type": PERSON, "role": ROLE_PATIENT}


def without_id(event: dict) -> dict:
    assert event["id"]
    return {k: v for k, v in event.items() if k != "id"}


def skeleton(event_type: dict, subtype: dict, action: str, outcome: str = "0") -> dict:
    return {
        "resourceType": "AuditEvent",
        "meta": {"versionId": "1", "profile": [TDE]},
        "type": event_type,
        "subtype": [subtype],
        "action": action,
        "period": {"start": AT, "end": AT},
        "recorded": AT,
        "outcome": outcome,
    }


def test_read_by_a_practitioner() -> None:
    titles = {"DocumentReference/cr-1": "Compte rendu opératoire"}
    record = AuditRecord("read", 200, actor=doctor(), resource_type="DocumentReference", resource_id="cr-1",
                         version=3, patients=["Patient/p1"], data_titles=titles, request_id="6f1c2d",
                         source_address="192.0.2.10", recorded=WHEN)
    [built] = build_events(record, "espace")

    assert built.patient == "Patient/p1"
    assert built.self_access is False
    assert without_id(built.resource) == {
        **skeleton(REST, rest("read"), "R"),
        "agent": [doctor_agent(), client_agent(DESTINATION)],
        "source": SOURCE,
        "entity": [
            patient_entity("Patient/p1"),
            {"what": {"reference": "DocumentReference/cr-1/_history/3"}, "type": SYSTEM_OBJECT, "role": ROLE_REPORT,
             "name": "Compte rendu opératoire"},
            {"what": {"identifier": {"value": "6f1c2d"}},
             "type": {"system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
                      "code": "XrequestId"}},
        ],
    }


def test_search_touching_two_patients_gives_one_event_per_patient_with_only_their_data() -> None:
    query = "DocumentReference?status=current&patient=Patient/p1,Patient/p2"
    record = AuditRecord(
        "search-type", 200, actor=doctor(), resource_type="DocumentReference", query=query,
        patients=["Patient/p2", "Patient/p1"],
        data_references=["DocumentReference/a", "DocumentReference/b", "Practitioner/dr"],
        data_patients={"DocumentReference/a": ["Patient/p1"], "DocumentReference/b": ["Patient/p2"],
                       "Practitioner/dr": []},
        source_address="192.0.2.10", recorded=WHEN)
    events = build_events(record, "espace")

    query_entity = {"type": SYSTEM_OBJECT, "role": ROLE_QUERY, "description": query,
                    "query": base64.b64encode(query.encode()).decode()}
    assert [e.patient for e in events] == ["Patient/p1", "Patient/p2"]
    for built, own_document in zip(events, ["DocumentReference/a", "DocumentReference/b"], strict=True):
        assert without_id(built.resource) == {
            **skeleton(REST, rest("search-type"), "E"),
            "agent": [doctor_agent(), client_agent(SOURCE_ROLE)],
            "source": SOURCE,
            "entity": [
                patient_entity(built.patient),
                {"what": {"reference": own_document}, "type": SYSTEM_OBJECT, "role": ROLE_REPORT},
                {"what": {"reference": "Practitioner/dr"}, "type": SYSTEM_OBJECT, "role": ROLE_DOMAIN},
                query_entity,
            ],
        }
    assert base64.b64decode(query_entity["query"]).decode() == query
    assert events[0].resource["id"] != events[1].resource["id"]


def test_create_by_the_patient() -> None:
    record = AuditRecord("create", 201, actor=patient_actor(), resource_type="DocumentReference",
                         resource_id="mine", version=1, patients=["Patient/p1"], actor_patients=["Patient/p1"],
                         recorded=WHEN)
    [built] = build_events(record, "espace")

    assert built.self_access is True
    assert without_id(built.resource) == {
        **skeleton(REST, rest("create"), "C"),
        "agent": [
            {"type": {"coding": [AUT]},
             "who": {"reference": "Patient/p1",
                     "identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1850575123456"},
                     "display": "Élodie Martin"},
             "altId": "ins-1850575123456",
             "name": "Élodie Martin",
             "requestor": True},
            client_agent(SOURCE_ROLE, software="app-mon-espace", address=None),
        ],
        "source": SOURCE,
        "entity": [
            patient_entity("Patient/p1"),
            {"what": {"reference": "DocumentReference/mine/_history/1"}, "type": SYSTEM_OBJECT, "role": ROLE_REPORT},
        ],
    }


def test_emergency_read_is_a_security_alert_with_purpose_etreat() -> None:
    record = AuditRecord("read", 200, actor=doctor(purpose="ETREAT"), resource_type="Observation",
                         resource_id="o1", version=1, patients=["Patient/p1"], emergency=True,
                         source_address="192.0.2.10", recorded=WHEN)
    [built] = build_events(record, "espace")

    assert without_id(built.resource) == {
        **skeleton(SECURITY_ALERT, rest("read"), "R"),
        "agent": [doctor_agent(purpose=ETREAT), client_agent(DESTINATION)],
        "source": SOURCE,
        "entity": [
            patient_entity("Patient/p1"),
            {"what": {"reference": "Observation/o1/_history/1"}, "type": SYSTEM_OBJECT, "role": ROLE_DOMAIN},
        ],
    }


def test_emergency_forces_etreat_even_if_the_token_said_treat() -> None:
    record = AuditRecord("read", 200, actor=doctor(purpose="TREAT"), patients=["Patient/p1"], emergency=True)
    [built] = build_events(record, "espace")
    assert built.resource["agent"][0]["purposeOfUse"] == [{"coding": [ETREAT]}]


def test_consent_denial_follows_balp_authz_consent() -> None:
    record = AuditRecord("read", 403, actor=doctor(), resource_type="DocumentReference", resource_id="cr-1",
                         patients=["Patient/p1"], consent_denied=True, consent_references=["Consent/c1"],
                         diagnostics="The patient has blocked this professional", request_id="r1",
                         source_address="192.0.2.10", recorded=WHEN)
    [built] = build_events(record, "espace")

    assert without_id(built.resource) == {
        **skeleton(SECURITY_ALERT, {"system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType",
                                    "code": "AuthZ-Consent"}, "E", outcome="4"),
        "outcomeDesc": "The patient has blocked this professional",
        "agent": [doctor_agent(), client_agent()],
        "source": SOURCE,
        # AuthZconsent slices entities closed on patient / consent / token
        "entity": [
            patient_entity("Patient/p1"),
            {"what": {"reference": "Consent/c1"},
             "type": {"system": "http://hl7.org/fhir/resource-types", "code": "Consent"}},
        ],
    }


def test_consent_denial_without_diagnostics_still_explains_itself() -> None:
    record = AuditRecord("search-type", 403, actor=doctor(), patients=["Patient/p1"], consent_denied=True)
    [built] = build_events(record, "espace")
    assert built.resource["outcomeDesc"] == "Access refused by the patient's consent"


def test_no_patient_gives_one_event_without_patient_entity() -> None:
    record = AuditRecord("read", 200, actor=doctor(), resource_type="Practitioner", resource_id="dr", version=2,
                         recorded=WHEN)
    [built] = build_events(record, "espace")
    assert built.patient is None
    assert built.resource["entity"] == [
        {"what": {"reference": "Practitioner/dr/_history/2"}, "type": SYSTEM_OBJECT, "role": ROLE_DOMAIN}]


def test_software_acting_alone_is_the_requestor() -> None:
    system = Actor("system", "batch", Scopes.parse("system/*.rs"), client_id="lgc-import")
    record = AuditRecord("delete", 204, actor=system, resource_type="Observation", resource_id="o1", version=4,
                         patients=["Patient/p1"], recorded=WHEN)
    [built] = build_events(record, "espace")
    assert built.resource["action"] == "D"
    # BALP Delete: the client is "Application" alone
    assert built.resource["agent"] == [{
        "type": {"coding": [APPLICATION]},
        "who": {"identifier": {"system": "https://espace.example.org/fhir/sid/client-id", "value": "lgc-import"},
                "display": "lgc-import"},
        "requestor": True,
    }]


@pytest.mark.parametrize(("status", "outcome"), [(200, "0"), (201, "0"), (304, "0"), (403, "4"), (404, "4"),
                                                 (500, "8"), (503, "8"), (0, "12")])
def test_outcome_from_http_status(status: int, outcome: str) -> None:
    assert outcome_code(status) == outcome


@pytest.mark.parametrize(("interaction", "subtype", "action"), [
    ("vread", "vread", "R"), ("search-system", "search-system", "E"), ("search-compartment", "search", "E"),
    ("history-instance", "history-instance", "R"), ("history-type", "history-type", "E"),
    ("update", "update", "U"), ("patch", "patch", "U"), ("operation", "operation", "E"),
    ("transaction", "transaction", "E"), ("batch", "batch", "E"),
])
def test_interaction_codes(interaction: str, subtype: str, action: str) -> None:
    [built] = build_events(AuditRecord(interaction, 200, actor=doctor()), "espace")
    assert built.resource["subtype"] == [rest(subtype)]
    assert built.resource["action"] == action


def test_unknown_interaction_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown interaction"):
        AuditRecord("browse", 200)


def test_every_built_event_is_valid_r4() -> None:
    validation = pytest.importorskip("fhir_server.validation.structure")
    definitions = pytest.importorskip("fhir_server.definitions")
    validator = validation.StructureValidator(definitions.load_definitions())
    records = [
        AuditRecord("read", 200, actor=doctor(), resource_type="Patient", resource_id="p1", version=1,
                    patients=["Patient/p1"], request_id="r", source_address="::1"),
        AuditRecord("search-type", 200, actor=doctor(), query="Observation?patient=p1", patients=["Patient/p1"],
                    data_references=["Observation/o1"]),
        AuditRecord("create", 201, actor=patient_actor(), resource_type="Observation", resource_id="o",
                    patients=["Patient/p1"], actor_patients=["Patient/p1"]),
        AuditRecord("read", 200, actor=doctor("ETREAT"), patients=["Patient/p1"], emergency=True),
        AuditRecord("read", 403, actor=doctor(), patients=["Patient/p1"], consent_denied=True,
                    consent_references=["Consent/c"]),
        AuditRecord("batch", 500, actor=None, diagnostics="boom"),
    ]
    for record in records:
        for built in build_events(record, "espace"):
            chained = with_chain({**built.resource, "meta": {**built.resource["meta"], "lastUpdated": AT}}, "0" * 64)
            assert validator.validate(chained) == [], record.interaction
