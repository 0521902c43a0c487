"""Broken variants of our examples fail, each with the error at the expected element: table-driven,
one row per rule of our profiles worth breaking (cardinality, slices, patterns, bindings, reference
targets, invariants)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from fhir_server.definitions import PROJECT_ROOT
from fhir_server.loader import read_resource
from fhir_server.validation.cli import build_validation
from fhir_server.validation.operation import ResourceValidation, errors_in

EXAMPLES = PROJECT_ROOT / "examples"
INS_OID = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "https://rpps.esante.gouv.fr"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
FR_CS = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
REST = "http://hl7.org/fhir/restful-interaction"
PATIENT = {"reference": "Patient/exemple-patient-ins"}
ETREAT = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT"}

Mutation = Callable[[dict], object]


def drop(*path: object) -> Mutation:
    """Remove the element at `path` (keys and list indexes)."""
    def mutate(resource: dict) -> None:
        parent = resource
        for step in path[:-1]:
            parent = parent[step]
        del parent[path[-1]]
    return mutate


def put(value: object, *path: object) -> Mutation:
    """Set the element at `path` to `value`."""
    def mutate(resource: dict) -> None:
        parent = resource
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = copy.deepcopy(value)
    return mutate


def append(value: object, *path: object) -> Mutation:
    def mutate(resource: dict) -> None:
        target = resource
        for step in path:
            target = target[step]
        target.append(copy.deepcopy(value))
    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(resource: dict) -> None:
        for mutation in mutations:
            mutation(resource)
    return mutate


COMPOSITION = ("entry", 0, "resource")
# (example file, mutation, expected error expression, text expected in its diagnostics)
CASES = [
    # -- FR Core Patient INS
    ("patient-ins.json", drop("birthDate"), "Patient.birthDate", "at least 1"),
    ("patient-ins.json", put("other", "gender"), "Patient.gender", "fr-core-vs-patient-gender-INS"),
    ("patient-ins.json", drop("extension", 0), "Patient.extension", "identityReliability"),
    ("patient-ins.json", drop("extension", 1, "valueAddress", "extension"),
     "Patient.extension[1].valueAddress.extension", "inseeCode"),
    ("patient-ins.json", put({"system": "urn:oid:1.2.250.1.71.4.2.2.350000139.1", "value": "000123",
                              "type": {"coding": [{"system": V2_0203, "code": "PI"}]}}, "identifier", 0),
     "Patient", "fr-core-1"),
    ("patient-ins.json", append({"use": "official", "system": "urn:oid:1.2.250.1.213.1.4.10",
                                 "value": "284037512345649",
                                 "type": {"coding": [{"system": FR_CS, "code": "INS-NIR-TEST"}]}}, "identifier"),
     "Patient", "fr-core-2"),
    ("patient-ins.json", put(["Élodie", "Marie"], "name", 0, "given"), "Patient.name[0].given", "at most 1"),
    ("patient-ins.json", drop("name", 0, "extension"), "Patient.name[0].extension", "birth-list-given-name"),
    ("patient-ins.json", drop("identifier", 0, "value"), "Patient.identifier[0].value", "INS-NIR"),
    ("patient-ins.json", put("usual", "identifier", 0, "use"), "Patient.identifier[0].use", "official"),
    # -- FR Core Patient
    ("patient-fr-core-ipp.json", drop("identifier", 0, "system"), "Patient.identifier[0].system", "at least 1"),
    ("patient-fr-core-ipp.json", drop("name", 0, "family"), "Patient.name[0].family", "officialName"),
    ("patient-fr-core-ipp.json", put({"reference": "Patient/exemple-patient-ins"}, "managingOrganization"),
     "Patient.managingOrganization", "not allowed"),
    ("patient-fr-core-ipp.json", put({"url": "validationMode", "valueCoding": {
        "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-mode-validation-identity", "code": "PERMIS"}},
        "extension", 0, "extension", 0), "Patient.extension[0].extension[0].valueCoding", "required"),
    # -- FR Core Practitioner, PractitionerRole, Organization, RelatedPerson
    ("practitioner-rpps.json", drop("identifier", 1, "system"), "Practitioner.identifier[1].system", "at least 1"),
    ("practitioner-rpps.json", put({"coding": [{"system": FR_CS, "code": "ADELI"}]}, "identifier", 1, "type"),
     "Practitioner.identifier[1].type", "pattern"),
    ("practitioner-rpps.json", append({"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810009999999"}, "identifier"),
     "Practitioner.identifier", "at most 1"),
    ("practitionerrole-medecin-generaliste.json", put({"reference": "Patient/exemple-patient-ins"}, "practitioner"),
     "PractitionerRole.practitioner", "not allowed"),
    ("organization-finess.json", drop("identifier", 0, "value"), "Organization.identifier[0].value", "at least 1"),
    ("organization-finess.json", append({"use": "official", "system": "urn:oid:1.2.250.1.71.4.2.2",
                                         "value": "1350000147",
                                         "type": {"coding": [{"system": FR_CS, "code": "IDNST"}]}},
                                        "identifier"), "Organization.identifier", "at most 1"),
    ("organization-finess.json", put({"reference": "Patient/exemple-patient-ins"}, "partOf"), "Organization.partOf",
     "not allowed"),
    ("relatedperson-mere.json", drop("identifier"), "RelatedPerson.identifier", "at least 1"),
    ("relatedperson-mere.json", put({"reference": "Practitioner/exemple-medecin-generaliste"}, "patient"),
     "RelatedPerson.patient", "not allowed"),
    # -- FR Core agenda
    ("appointment-consultation.json", put([PATIENT], "slot"), "Appointment.slot[0]", "not allowed"),
    ("appointment-consultation.json", put({"reference": "Device/robot"}, "extension", 0, "valueReference"),
     "Appointment.extension[0].valueReference", "not allowed"),
    ("schedule-medecin-generaliste.json", put([{"text": "Consultation"}], "serviceType"), "Schedule.serviceType",
     "max 0"),
    ("schedule-medecin-generaliste.json", put([{"text": "A"}, {"text": "B"}], "serviceCategory"),
     "Schedule.serviceCategory", "at most 1"),
    ("slot-consultation.json", put({"reference": "Patient/exemple-patient-ins"}, "schedule"), "Slot.schedule",
     "not allowed"),
    # -- Espace Immunization
    ("immunization-dtcap.json", both(drop("occurrenceDateTime"), put("hier", "occurrenceString")),
     "Immunization.occurrenceString", "not allowed"),
    ("immunization-dtcap.json", put({"coding": [{"system": "http://snomed.info/sct", "code": "871875004"}]},
                                    "vaccineCode"), "Immunization", "espace-imm-1"),
    ("immunization-dtcap.json", put("RAPPEL", "protocolApplied", 0, "series"), "Immunization.protocolApplied[0].series",
     "not in the value set"),
    ("immunization-dtcap.json", drop("vaccineCode", "coding", 0, "code"), "Immunization.vaccineCode.coding[0].code",
     "at least 1"),
    ("immunization-dtcap.json", put({"reference": "Patient/exemple-patient-ins"}, "performer", 0, "actor"),
     "Immunization.performer[0].actor", "not allowed"),
    # -- Espace Consent
    ("consent-restrictions.json", put({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                                  "code": "research"}]}, "scope"), "Consent.scope", "pattern"),
    ("consent-restrictions.json", drop("dateTime"), "Consent.dateTime", "at least 1"),
    ("consent-restrictions.json", drop("policy"), "Consent.policy", "at least 1"),
    ("consent-restrictions.json", put({"type": "deny"}, "provision", "provision", 0), "Consent.provision.provision[0]",
     "espace-consent-3"),
    ("consent-restrictions.json", put("permit", "provision", "provision", 1, "type"), "Consent.provision.provision[1]",
     "espace-consent-2"),
    ("consent-restrictions.json", put({"display": "Dr Paul Marchand"}, "provision", "provision", 0, "actor", 0,
                                      "reference"), "Consent.provision.provision[0].actor[0].reference",
     "espace-consent-1"),
    ("consent-restrictions.json", put([{"coding": [{"code": "access"}]}], "provision", "code"),
     "Consent.provision.code", "max 0"),
    ("consent-restrictions.json", put({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                                  "code": "AUT"}]}, "provision", "provision", 0, "actor", 0, "role"),
     "Consent.provision.provision[0].actor[0].role", "pattern"),
    ("consent-opposition.json", put([{"type": "permit", "provision": [{"type": "deny", "purpose": [ETREAT]}]}],
                                    "provision", "provision"),
     "Consent.provision.provision[0].provision", "max 0"),
    # -- Espace Communication
    ("communication-message-professionnel.json", drop("topic"), "Communication", "espace-comm-1"),
    ("communication-reponse-patient.json", drop("sent"), "Communication", "espace-comm-2"),
    ("communication-message-professionnel.json", drop("payload", 1, "contentAttachment", "contentType"),
     "Communication.payload[1].contentAttachment.contentType", "at least 1"),
    ("communication-message-professionnel.json", drop("payload", 1, "contentAttachment", "url"),
     "Communication.payload[1].contentAttachment", "espace-comm-3"),
    ("communication-message-professionnel.json", drop("recipient"), "Communication.recipient", "at least 1"),
    ("communication-message-professionnel.json", put({"reference": "Device/robot"}, "sender"), "Communication.sender",
     "not allowed"),
    ("communication-reponse-patient.json", put([{"reference": "Observation/tension"}], "inResponseTo"),
     "Communication.inResponseTo[0]", "not allowed"),
    # -- Espace VSM (document Bundle and its Composition)
    ("bundle-vsm-synthese-medicale.json", put({"coding": [{"system": "http://loinc.org", "code": "34133-9"}]},
                                              *COMPOSITION, "type"),
     "Bundle.entry[0].resource.type", "pattern"),
    ("bundle-vsm-synthese-medicale.json", drop(*COMPOSITION, "section", 1), "Bundle.entry[0].resource.section",
     "sectionAllergies"),
    ("bundle-vsm-synthese-medicale.json", drop(*COMPOSITION, "section", 3, "emptyReason"),
     "Bundle.entry[0].resource.section[3]", "espace-vsm-1"),
    ("bundle-vsm-synthese-medicale.json", put([{"reference": "urn:uuid:6f1b2c3d-4e5f-4a6b-8c7d-000000000005"}],
                                              *COMPOSITION, "section", 5, "entry"),
     "Bundle.entry[0].resource.section[5].entry[0]", "not allowed"),
    ("bundle-vsm-synthese-medicale.json", drop(*COMPOSITION, "custodian"), "Bundle.entry[0].resource.custodian",
     "at least 1"),
    ("bundle-vsm-synthese-medicale.json", put("collection", "type"), "Bundle.type", "fixed"),
    ("bundle-vsm-synthese-medicale.json", drop("identifier"), "Bundle.identifier", "at least 1"),
    ("bundle-vsm-synthese-medicale.json", drop("entry", 4, "fullUrl"), "Bundle.entry[4].fullUrl", "at least 1"),
    ("bundle-vsm-synthese-medicale.json", drop("entry", 1, "resource", "extension"), "Bundle.entry",
     "slice 'patient'"),
    # -- TDE / Espace AuditEvent and its BALP variants
    ("auditevent-lecture-document.json", append({"system": REST, "code": "vread"}, "subtype"), "AuditEvent.subtype",
     "at most 1"),
    ("auditevent-lecture-document.json", drop("period"), "AuditEvent.period", "at least 1"),
    ("auditevent-lecture-document.json", put(False, "agent", 0, "requestor"), "AuditEvent", "espace-audit-1"),
    ("auditevent-lecture-document.json", put({"reference": "Practitioner/exemple-medecin-generaliste"},
                                             "entity", 0, "what"), "AuditEvent.entity[0].what", "not allowed"),
    ("auditevent-lecture-document.json", put("C", "action"), "AuditEvent.action", "fixed"),
    ("auditevent-lecture-document.json", put([{"system": REST, "code": "search-type"}], "subtype"),
     "AuditEvent.subtype[0]", "espace-audit-read-subtype"),
    ("auditevent-lecture-document.json", drop("entity", 1), "AuditEvent.entity", "slice 'data'"),
    ("auditevent-recherche-documents.json", drop("entity", 2, "query"), "AuditEvent.entity[2].query", "at least 1"),
    ("auditevent-refus-consentement.json", put("0", "outcome"), "AuditEvent", "espace-audit-3"),
    ("auditevent-refus-consentement.json", drop("outcomeDesc"), "AuditEvent.outcomeDesc", "at least 1"),
]


@pytest.fixture(scope="module")
def validation() -> ResourceValidation:
    return build_validation()


@pytest.mark.parametrize(("example", "mutation", "expression", "text"), CASES,
                         ids=[f"{c[0].removesuffix('.json')}:{c[2]}:{c[3]}" for c in CASES])
def test_broken_variant_fails_at_the_element(validation: ResourceValidation, example: str, mutation: Mutation,
                                             expression: str, text: str) -> None:
    resource = read_resource(EXAMPLES / example)
    assert errors_in(validation.validate(resource, None, None, for_write=True)) == []   # the example itself is valid
    mutation(resource)
    errors = errors_in(validation.validate(resource, None, None, for_write=True))
    at_expression = [e for e in errors if expression in e.expression]
    assert at_expression, f"no error at {expression}; errors: {[(e.expression, e.diagnostics) for e in errors]}"
    assert any(text in e.diagnostics for e in at_expression), [e.diagnostics for e in at_expression]


def test_every_profile_of_ours_has_broken_variants() -> None:
    broken = {read_resource(EXAMPLES / example)["meta"]["profile"][-1] for example, *_ in CASES}
    assert {url.rsplit("/", 1)[-1] for url in broken} >= {
        "fr-core-patient-ins", "fr-core-patient", "fr-core-practitioner", "fr-core-practitioner-role",
        "fr-core-organization", "fr-core-related-person", "fr-core-appointment", "fr-core-schedule", "fr-core-slot",
        "espace-immunization", "espace-consent", "espace-communication", "espace-vsm-bundle",
        "espace-auditevent-patient-read", "espace-auditevent-patient-query", "espace-auditevent-consent-refusal"}
