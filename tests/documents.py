"""PDSm-conformant DocumentReferences for tests that are about something else (access, audit):
every DocumentReference stored by the server must conform to the PDSm comprehensive profile."""

from __future__ import annotations

import hashlib

PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-comprehensive-document-reference"
CLASS_SYSTEM = "https://espace.example.org/fhir/CodeSystem/document-class"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
VISIBILITY = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"


def _number(text: str | None) -> int:
    return int(hashlib.sha1(str(text).encode()).hexdigest()[:12], 16)


def pdsm_document(doc_id: str | None, patient: str, author: str, *, klass: str | None = None,
                  label: str | None = None, title: str | None = None) -> dict:
    """A comprehensive PDSm DocumentReference of `Patient/<patient>` written by `author`
    (a literal reference such as `Practitioner/x`), in document class `klass` of our
    document-class CodeSystem (else a TRE_A03 "Compte rendu"), with an optional visibility label."""
    category = {"system": CLASS_SYSTEM, "code": klass} if klass else {"system": TRE_A03, "code": "10"}
    label_coding = {"system": VISIBILITY, "code": label} if label else \
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}
    document = {
        "resourceType": "DocumentReference",
        "meta": {"profile": [PDSM]},
        "contained": [{"resourceType": "PractitionerRole", "id": "auteur",
                       "practitioner": {"reference": author}}],
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.250.1.999.1.{_number(doc_id)}"},
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Compte rendu"}]},
        "category": [{"coding": [category]}],
        "subject": {"reference": f"Patient/{patient}"},
        "date": "2026-11-20T10:00:00+01:00",
        "author": [{"reference": author}, {"reference": "#auteur"}],
        "custodian": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1350000139"}},
        "securityLabel": [{"coding": [label_coding]}],
        "content": [{
            "attachment": {"contentType": "application/pdf", "language": "fr-FR", "url": f"Binary/{doc_id or 'x'}",
                           "size": 1024, "hash": "2jmj7l5rSw0yVb/vlWAYkK/YBwk=", "title": title or f"Document {doc_id}",
                           "creation": "2026-11-20T10:00:00+01:00"},
            "format": {"system": "https://mos.esante.gouv.fr/NOS/TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode",
                       "code": "urn:ihe:iti:xds-sd:pdf:2008"},
        }],
        "context": {
            "period": {"start": "2026-11-20T09:30:00+01:00"},
            "facilityType": {"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/"
                                                   "TRE-R02-SecteurActivite", "code": "SA01"}]},
            "practiceSetting": {"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_A01-CadreExercice/FHIR/"
                                                      "TRE-A01-CadreExercice", "code": "ETABLISSEMENT"}]},
            "sourcePatientInfo": {"reference": f"Patient/{patient}"},
        },
    }
    if doc_id:
        document = {"resourceType": "DocumentReference", "id": doc_id,
                    **{k: v for k, v in document.items() if k != "resourceType"}}
    return document
