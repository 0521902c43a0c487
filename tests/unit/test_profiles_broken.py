"""Broken variants of our examples fail, each with the error at the expected element: table-driven,
one row per rule of our profiles worth breaking (cardinality, slices, patterns, bindings, reference
targets, invariants, extensions, primitive formats), and every profile of profiles/ has rows.

The MHD payloads of examples/mhd/ (read, never changed here) also give the valid instances of the
PDSm profiles that no example file illustrates alone (`VALID_VARIANTS`): the isArchived and IHE
extensions, the ITI-65 PATCH Parameters, the find responses. A last table holds what must stay a
warning: codes of systems the server does not hold, unknown extensions, extensible bindings."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import NamedTuple

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
FR = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
ESP = "https://espace.example.org/fhir/StructureDefinition/"
TDE = "https://interop.esante.gouv.fr/ig/fhir/tde/StructureDefinition/tde-auditevent"
PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
IHE = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
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


class Case(NamedTuple):
    example: str                  # file of examples/
    mutation: Mutation
    expression: str               # where the error must be reported
    text: str                     # in its diagnostics
    profile: str | None = None    # whose rule is broken (default: see `profile_at`)


# -- derived MHD payloads ----------------------------------------------------------------------------------
CR = "mhd/01-iti65-cr-hospitalisation.json"               # ITI-65: SubmissionSet, DocumentReference, Binary
CLASSEUR = "mhd/04-iti65-cr-imagerie-classeur.json"       # ITI-65 with a Folder (entry 3)
PHOTO = "mhd/06-iti105-photo-patient.json"                # ITI-105 simplified publication
SUBMISSION, DOCUMENT, FOLDER = ("entry", 0, "resource"), ("entry", 1, "resource"), ("entry", 3, "resource")
BASE = "https://espace.example.org/fhir/"
# ITI-65 entry deprecating an earlier document (IHE MHD "UpdateDocumentRefs": FHIRPath Patch on status)
PATCH_ENTRY = {
    "fullUrl": "urn:uuid:6a1f3c20-1b2d-4e5f-8000-000000000009",
    "resource": {"resourceType": "Parameters", "meta": {"profile": [IHE + "IHE.MHD.Patch.Parameters"]},
                 "parameter": [{"name": "operation", "part": [
                     {"name": "type", "valueCode": "replace"},
                     {"name": "path", "valueString": "DocumentReference.status"},
                     {"name": "value", "valueCode": "superseded"}]}]},
    "request": {"method": "PATCH", "url": "DocumentReference/exemple-cr-hospitalisation-v1"},
}
CHU = {"resourceType": "Organization", "id": "organisation-auteur", "name": "Centre hospitalier de démonstration",
       "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1350000139"}]}


def _author_organisation(bundle: dict) -> None:
    """The submission set's author organisation (MHD authorOrg), as a contained Organization."""
    submission = bundle["entry"][0]["resource"]
    submission["contained"].append(copy.deepcopy(CHU))
    submission["source"]["extension"] = [{"url": IHE + "ihe-authorOrg",
                                          "valueReference": {"reference": "#organisation-auteur"}}]


def _find_response(profile: str, entry: int, found_id: str) -> Mutation:
    """Replace an ITI-65 bundle by the ITI-67/66 searchset answering with one of its resources."""
    def mutate(bundle: dict) -> None:
        found = copy.deepcopy(bundle["entry"][entry]["resource"])
        found["id"] = found_id
        for item in found.get("entry") or []:             # a folder's members, as stored
            item["item"] = {"reference": "DocumentReference/exemple-cr-imagerie"}
        bundle.clear()
        bundle.update({"resourceType": "Bundle", "meta": {"profile": [profile]}, "type": "searchset", "total": 1,
                       "entry": [{"fullUrl": f"{BASE}{found['resourceType']}/{found_id}", "resource": found,
                                  "search": {"mode": "match"}}]})
    return mutate


AUTHOR_ORGANISATION: Mutation = _author_organisation
FIND_DOCUMENTS = _find_response(PDSM + "pdsm-find-documentreferences-comprehensive-response", 1,
                                "exemple-cr-hospitalisation")
FIND_LISTS = _find_response(PDSM + "pdsm-find-lists-response", 3, "exemple-classeur-pneumologie")

COMPOSITION = ("entry", 0, "resource")
# (example file, mutation, expected error expression, text expected in its diagnostics[, profile whose rule
# is broken: by default the last profile claimed by the resource holding the expression])
ROWS: list[tuple] = [
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
     "Appointment.extension[0].valueReference", "not allowed", FR + "fr-core-appointment-operator"),
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
     "at most 1", TDE),
    ("auditevent-lecture-document.json", drop("period"), "AuditEvent.period", "at least 1"),
    ("auditevent-lecture-document.json", put(False, "agent", 0, "requestor"), "AuditEvent", "espace-audit-1",
     ESP + "espace-auditevent"),
    ("auditevent-lecture-document.json", put({"reference": "Practitioner/exemple-medecin-generaliste"},
                                             "entity", 0, "what"), "AuditEvent.entity[0].what", "not allowed"),
    ("auditevent-lecture-document.json", put("C", "action"), "AuditEvent.action", "fixed"),
    ("auditevent-lecture-document.json", put([{"system": REST, "code": "search-type"}], "subtype"),
     "AuditEvent.subtype[0]", "espace-audit-read-subtype"),
    ("auditevent-lecture-document.json", drop("entity", 1), "AuditEvent.entity", "slice 'data'"),
    ("auditevent-recherche-documents.json", drop("entity", 2, "query"), "AuditEvent.entity[2].query", "at least 1"),
    ("auditevent-refus-consentement.json", put("0", "outcome"), "AuditEvent", "espace-audit-3"),
    ("auditevent-refus-consentement.json", drop("outcomeDesc"), "AuditEvent.outcomeDesc", "at least 1"),
    ("auditevent-lecture-document.json", append({"who": {"display": "Passerelle"}}, "agent"), "AuditEvent.agent",
     "at most 2", TDE),
    ("auditevent-lecture-document.json", drop("extension", 0, "extension", 1), "AuditEvent.extension[0].extension",
     "hash", ESP + "audit-chain"),
    ("auditevent-creation-vaccination.json", put("U", "action"), "AuditEvent.action", "fixed"),
    ("auditevent-creation-vaccination.json", put({"reference": "Patient/exemple-patient-ins"}, "agent", 0,
                                                 "extension", 0, "valueReference"),
     "AuditEvent.agent[0].extension[0].valueReference", "not allowed", ESP + "audit-agent-organization"),
    ("auditevent-modification-rendez-vous.json", put([{"system": REST, "code": "create"}], "subtype"),
     "AuditEvent.subtype[0]", "espace-audit-update-subtype"),
    ("auditevent-suppression-message.json", put([{"system": REST, "code": "read"}], "subtype"),
     "AuditEvent.subtype[0]", "pattern"),
    ("bundle-historique-acces.json", drop("entry", 0, "search", "extension", 0, "extension", 1),
     "Bundle.entry[0].search.extension[0].extension", "when", ESP + "access-summary"),
    # -- FR Core extensions and datatypes, checked by URL against their definitions
    ("patient-ins.json", put({"url": FR + "fr-core-identity-reliability", "valueCode": "VALI"}, "extension", 0),
     "Patient.extension[0].valueCode", "max 0", FR + "fr-core-identity-reliability"),
    ("patient-ins.json", put({"url": FR + "fr-core-address-insee-code", "valueString": "75056"},
                             "extension", 1, "valueAddress", "extension", 0),
     "Patient.extension[1].valueAddress.extension[0].valueString", "not allowed", FR + "fr-core-address-insee-code"),
    ("patient-ins.json", put({"url": FR + "fr-core-patient-birth-list-given-name", "valueCode": "Élodie"},
                             "name", 0, "extension", 0),
     "Patient.name[0].extension[0].valueCode", "not allowed", FR + "fr-core-patient-birth-list-given-name"),
    ("patient-ins.json", append({"url": FR + "fr-core-address-insee-code", "valueCoding": {
        "system": "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM", "code": "35047"}},
        "address", 0, "extension"), "Patient.address[0].extension", "at most 1", FR + "fr-core-address"),
    ("patient-ins.json", put(["Mme", "Dr"], "name", 1, "prefix"), "Patient.name[1].prefix", "at most 1",
     FR + "fr-core-human-name"),
    ("patient-ins.json", put("17/03/1984", "birthDate"), "Patient.birthDate", "does not match"),
    ("schedule-medecin-generaliste.json", drop("extension", 0, "extension", 0), "Schedule.extension[0].extension",
     "serviceType", FR + "fr-core-service-type-duration"),
    # -- PDSm: comprehensive DocumentReference, SubmissionSet, Folder and provide bundle (ITI-65)
    (CR, drop(*DOCUMENT, "masterIdentifier"), "Bundle.entry[1].resource.masterIdentifier", "at least 1"),
    (CR, drop(*DOCUMENT, "securityLabel"), "Bundle.entry[1].resource.securityLabel", "at least 1"),
    (CR, drop(*DOCUMENT, "content", 0, "attachment", "hash"), "Bundle.entry[1].resource.content[0].attachment.hash",
     "at least 1"),
    (CR, put("entered-in-error", *DOCUMENT, "status"), "Bundle.entry[1].resource.status", "not in the value set"),
    (CR, put([{"url": PDSM + "pdsm-ext-is-archived", "valueString": "non"}], *DOCUMENT, "extension"),
     "Bundle.entry[1].resource.extension[0].valueString", "not allowed", PDSM + "pdsm-ext-is-archived"),
    (CR, drop(*SUBMISSION, "extension", 1), "Bundle.entry[0].resource.extension", "sourceId"),
    (CR, put({"coding": [{"system": LIST_TYPES, "code": "folder"}]}, *SUBMISSION, "code"),
     "Bundle.entry[0].resource.code", "pattern"),
    (CR, put({"url": IHE + "ihe-sourceId", "valueString": "urn:oid:1.2.250.1.999.1.1.7"}, *SUBMISSION, "extension", 1),
     "Bundle.entry[0].resource.extension[1].valueString", "not allowed", IHE + "ihe-sourceId"),
    (CR, put({"url": IHE + "ihe-designationType"}, *SUBMISSION, "extension", 0),
     "Bundle.entry[0].resource.extension[0].value", "at least 1", IHE + "ihe-designationType"),
    (CR, put({"url": PDSM + "pdsm-ext-intended-recipient", "valueReference": PATIENT}, *SUBMISSION, "extension", 2),
     "Bundle.entry[0].resource.extension[2].valueReference", "not allowed", PDSM + "pdsm-ext-intended-recipient"),
    (CR, append({"url": IHE + "ihe-intendedRecipient", "valueReference": {"reference": "Encounter/sejour"}},
                *SUBMISSION, "extension"),
     "Bundle.entry[0].resource.extension[3].valueReference", "not allowed", IHE + "ihe-intendedRecipient"),
    (CR, put([{"url": IHE + "ihe-authorOrg", "valueReference": {"reference": "Patient/exemple-patient-ins"}}],
             *SUBMISSION, "source", "extension"),
     "Bundle.entry[0].resource.source.extension[0].valueReference", "not allowed", IHE + "ihe-authorOrg"),
    (CLASSEUR, drop(*FOLDER, "extension"), "Bundle.entry[3].resource.extension", "designationType"),
    (CLASSEUR, put("snapshot", *FOLDER, "mode"), "Bundle.entry[3].resource.mode", "pattern"),
    (CLASSEUR, drop(*FOLDER, "entry"), "Bundle.entry[3].resource.entry", "at least 1"),
    (CR, put("batch", "type"), "Bundle.type", "pattern"),
    (CR, put("PUT", "entry", 0, "request", "method"), "Bundle.entry", "SubmissionSet"),
    (CR, both(append(PATCH_ENTRY, "entry"), put("DocumentReference.description", "entry", 3, "resource", "parameter", 0,
                                                "part", 1, "valueString")),
     "Bundle.entry[3].resource.parameter[0].part[1].valueString", "pattern", IHE + "IHE.MHD.Patch.Parameters"),
    # -- PDSm: simplified publication (ITI-105) and find responses (ITI-67)
    (PHOTO, put("superseded", "status"), "DocumentReference.status", "pattern"),
    (PHOTO, drop("content", 0, "attachment", "data"), "DocumentReference.content[0].attachment.data", "at least 1"),
    (CR, both(FIND_DOCUMENTS, drop("total")), "Bundle.total", "at least 1"),
    (CR, both(FIND_DOCUMENTS, put("collection", "type")), "Bundle.type", "fixed"),
    (CLASSEUR, both(FIND_LISTS, drop("total")), "Bundle.total", "at least 1"),
]
CASES = [Case(*row) for row in ROWS]
# Instances of the PDSm profiles and extensions that no example file illustrates on its own, derived from the
# MHD payloads: (example, mutation, the profile or extension the variant illustrates)
VALID_VARIANTS = [
    (CR, put([{"url": PDSM + "pdsm-ext-is-archived", "valueBoolean": False}], *DOCUMENT, "extension"),
     PDSM + "pdsm-ext-is-archived"),
    (CR, append({"url": IHE + "ihe-intendedRecipient", "valueReference": PATIENT}, *SUBMISSION, "extension"),
     IHE + "ihe-intendedRecipient"),                  # a copy for the patient
    (CR, AUTHOR_ORGANISATION, IHE + "ihe-authorOrg"),
    (CR, append(PATCH_ENTRY, "entry"), IHE + "IHE.MHD.Patch.Parameters"),
    (CR, FIND_DOCUMENTS, PDSM + "pdsm-find-documentreferences-comprehensive-response"),
    (CLASSEUR, FIND_LISTS, PDSM + "pdsm-find-lists-response"),
    # a validated identity known by its INS-NIA alone: `temp` in FR Core 2.1.0, so no official identifier
    ("patient-ins.json", put([{"use": "temp", "type": {"coding": [{"system": FR_CS, "code": "INS-NIA"}]},
                               "system": "urn:oid:1.2.250.1.213.1.4.9", "value": "284037512345640"}], "identifier"),
     "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins"),
]
# What must stay a warning: (example, mutation, expression, text of the warning)
WARNINGS = [
    ("patient-ins.json", put("99999", "extension", 1, "valueAddress", "extension", 0, "valueCoding", "code"),
     "Patient", "fr-core-3"),
    ("patient-ins.json", append({"url": ESP + "inconnue", "valueString": "x"}, "extension"), "Patient.extension[2]",
     "Unknown extension"),
    ("patient-ins.json", put("INCONNU", "extension", 0, "extension", 0, "valueCoding", "code"),
     "Patient.extension[0].extension[0].valueCoding", "extensible binding"),
    ("immunization-dtcap.json", put({"coding": [{"system": "http://snomed.info/sct", "code": "368208006",
                                                 "display": "Left upper arm structure"}]}, "site"),
     "Immunization.site", "accepted without being checked"),
    ("communication-message-professionnel.json", lambda resource: None,
     "Communication.payload[1].contentAttachment.contentType", "accepted without being checked"),   # MIME types
    (CR, lambda resource: None, "Bundle.entry[1].resource.context.sourcePatientInfo", "aggregation"),
    (CR, put([{"url": IHE + "ihe-authorOrg", "valueReference": {"reference": "Organization/exemple-chu"}}],
             *SUBMISSION, "source", "extension"),
     "Bundle.entry[0].resource.source.extension[0].valueReference", "aggregation"),
]


@pytest.fixture(scope="module")
def validation() -> ResourceValidation:
    return build_validation()


def validate(validation: ResourceValidation, example: str, resource: dict) -> list:
    # the MHD payloads are ITI-65 / ITI-105 bodies: held to the profiles they claim, not stored as they are
    return validation.validate(resource, None, None, for_write=not example.startswith("mhd/"))


def variant(example: str, mutation: Mutation) -> dict:
    resource = read_resource(EXAMPLES / example)
    mutation(resource)
    return resource


@pytest.mark.parametrize("case", CASES, ids=[f"{c.example.removesuffix('.json')}:{c.expression}:{c.text}"
                                             for c in CASES])
def test_broken_variant_fails_at_the_element(validation: ResourceValidation, case: Case) -> None:
    example = read_resource(EXAMPLES / case.example)
    assert errors_in(validate(validation, case.example, example)) == []       # the example itself is valid
    errors = errors_in(validate(validation, case.example, variant(case.example, case.mutation)))
    at_expression = [e for e in errors if case.expression in e.expression]
    assert at_expression, f"no error at {case.expression}; errors: {[(e.expression, e.diagnostics) for e in errors]}"
    assert any(case.text in e.diagnostics for e in at_expression), [e.diagnostics for e in at_expression]


@pytest.mark.parametrize(("example", "mutation", "profile"), VALID_VARIANTS,
                         ids=[v[2].rsplit("/", 1)[-1] for v in VALID_VARIANTS])
def test_derived_valid_variant(validation: ResourceValidation, example: str, mutation: Mutation,
                               profile: str) -> None:
    resource = variant(example, mutation)
    assert profile in used_canonicals(resource)
    assert errors_in(validate(validation, example, resource)) == []


@pytest.mark.parametrize(("example", "mutation", "expression", "text"), WARNINGS,
                         ids=[f"{w[0].removesuffix('.json')}:{w[2]}:{w[3]}" for w in WARNINGS])
def test_what_stays_a_warning(validation: ResourceValidation, example: str, mutation: Mutation, expression: str,
                              text: str) -> None:
    issues = validate(validation, example, variant(example, mutation))
    assert errors_in(issues) == []
    warnings = [i for i in issues if i.severity == "warning" and expression in i.expression]
    assert any(text in w.diagnostics for w in warnings), [(w.expression, w.diagnostics) for w in issues]


def test_every_profile_in_profiles_has_broken_variants() -> None:
    broken = {case.profile or profile_at(variant(case.example, case.mutation), case.expression) for case in CASES}
    authored = {read_resource(path)["url"] for path in (PROJECT_ROOT / "profiles").rglob("StructureDefinition-*.json")}
    assert authored - broken == set()


# -- helpers of the tables ---------------------------------------------------------------------------------
def used_canonicals(resource: object) -> set[str]:
    """Profiles claimed and extension URLs used anywhere in a resource (bundle entries, contained...)."""
    found: set[str] = set()
    if isinstance(resource, dict):
        found |= {p.split("|", 1)[0] for p in (resource.get("meta") or {}).get("profile") or []
                  if isinstance(resource.get("resourceType"), str)}
        found |= {e["url"] for e in resource.get("extension") or [] if isinstance(e, dict) and "url" in e}
        for value in resource.values():
            found |= used_canonicals(value)
    elif isinstance(resource, list):
        for item in resource:
            found |= used_canonicals(item)
    return found


def profile_at(resource: dict, expression: str) -> str | None:
    """The last profile claimed by the innermost resource holding `expression` that claims one."""
    node: object = resource
    claimed = _last_profile(resource)
    for name, index in re.findall(r"\.(\w+)(?:\[(\d+)\])?", expression):
        node = node.get(name) if isinstance(node, dict) else None
        if index and isinstance(node, list):
            node = node[int(index)] if int(index) < len(node) else None
        if isinstance(node, dict) and "resourceType" in node:
            claimed = _last_profile(node) or claimed
    return claimed


def _last_profile(resource: dict) -> str | None:
    profiles = (resource.get("meta") or {}).get("profile") or []
    return profiles[-1] if profiles else None
