"""Our SearchParameters from the French IGs (profiles/search-parameters): PDSm, MHD, GAP, TDE,
used the way the DMP / agenda / traceability transactions use them."""

from __future__ import annotations

import pytest

from fhir_server.search import SearchService
from tests.search.conftest import BASE, id_set, put

INS = "urn:oid:1.2.250.1.213.1.4.8"
ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
VISIBILITY = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
SOURCE_ID = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
AUTHOR_ORG = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-authorOrg"


def document(ident: str, archived: bool | None, start: str, end: str | None, creation: str, label: str) -> dict:
    resource = {
        "resourceType": "DocumentReference", "id": ident, "status": "current",
        "subject": {"reference": "Patient/ins1"}, "date": "2024-11-20T10:30:00+01:00",
        "securityLabel": [{"coding": [{"system": VISIBILITY, "code": label}]}],
        "context": {"period": {"start": start, **({"end": end} if end else {})},
                    "facilityType": {"coding": [{"system": "http://snomed.info/sct", "code": "35971002"}]},
                    "practiceSetting": {"coding": [{"system": "http://snomed.info/sct", "code": "394802001"}]}},
        "content": [{"attachment": {"contentType": "application/pdf", "creation": creation},
                     "format": {"system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                                "code": "urn:ihe:iti:xds-sd:pdf:2008"}}],
    }
    if archived is not None:
        resource["extension"] = [{"url": ARCHIVED, "valueBoolean": archived}]
    return resource


RESOURCES = [
    {"resourceType": "Patient", "id": "ins1", "identifier": [{"system": INS, "value": "2800575123456"}]},
    document("cr", False, "2024-11-20T09:00:00+01:00", "2024-11-20T10:00:00+01:00", "2024-11-20", "MASQUE_PS"),
    document("ordo", True, "2024-11-20T09:00:00+01:00", None, "2024-11-21", "INVISIBLE_PATIENT"),
    document("old", None, "2019-03-01", "2019-03-02", "2019-03-02", "MASQUE_PS"),
    {"resourceType": "List", "id": "lot1", "status": "current", "mode": "working",
     "extension": [{"url": SOURCE_ID, "valueIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"}},
                   {"url": ARCHIVED, "valueBoolean": False}],
     "source": {"extension": [{"url": AUTHOR_ORG, "valueReference": {"reference": "Organization/cab"}}]}},
    {"resourceType": "Appointment", "id": "rdv1", "status": "booked", "priority": 5, "created": "2024-05-01",
     "description": "Consultation de suivi", "comment": "Apporter l'ordonnance",
     "start": "2024-06-03T09:00:00+02:00", "end": "2024-06-03T09:30:00+02:00",
     "participant": [{"actor": {"reference": "Practitioner/dr"}, "status": "accepted"}]},
    {"resourceType": "Appointment", "id": "rdv2", "status": "booked", "priority": 1, "created": "2024-05-20",
     "description": "Vaccination", "start": "2024-06-10T14:00:00+02:00", "end": "2024-06-10T14:15:00+02:00",
     "participant": [{"actor": {"reference": "Practitioner/dr"}, "status": "accepted"}]},
    {"resourceType": "AuditEvent", "id": "ae1", "recorded": "2026-01-07T09:32:15Z",
     "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
     "period": {"start": "2026-01-07T09:30:00Z", "end": "2026-01-07T09:32:00Z"},
     "agent": [{"who": {"reference": "Practitioner/dr"}, "requestor": True}],
     "source": {"observer": {"display": "SIH"}}},
]


@pytest.fixture(scope="module", autouse=True)
def data(store, registry) -> None:
    put(store, registry, *RESOURCES)


@pytest.mark.parametrize(("resource_type", "query", "expected"), [
    ("DocumentReference", f"patient.identifier={INS}|2800575123456&status=current", "cr ordo old"),
    ("DocumentReference", "isArchived=true", "ordo"),
    ("DocumentReference", "isArchived=false", "cr"),
    ("DocumentReference", "isArchived:not=true", "cr old"),
    ("DocumentReference", "period-start=ge2024-01-01", "cr ordo"),
    ("DocumentReference", "period-end=2024-11-20", "cr"),
    ("DocumentReference", "period-end:missing=true", "ordo"),
    ("DocumentReference", "creation=2024-11-21", "ordo"),
    ("DocumentReference", "period=2024-11-20", "cr"),               # ordo's period has no end
    ("DocumentReference", f"security-label={VISIBILITY}|MASQUE_PS", "cr old"),
    ("DocumentReference", "facility=http://snomed.info/sct|35971002", "cr ordo old"),
    ("DocumentReference", "setting=394802001", "cr ordo old"),
    ("DocumentReference", "format=urn:ihe:iti:xds-sd:pdf:2008", "cr ordo old"),
    ("List", "sourceId=urn:ietf:rfc:3986|urn:oid:1.2.3", "lot1"),
    ("List", "authorOrg=Organization/cab", "lot1"),
    ("List", "isArchived=false", "lot1"),
    ("Appointment", "priority=5", "rdv1"),
    ("Appointment", "description=ordonnance", ""),                  # prefix of a whole text only
    ("Appointment", "description:contains=ordonnance", "rdv1"),
    ("Appointment", "description=vaccin", "rdv2"),
    ("Appointment", "created=ge2024-05-10", "rdv2"),
    ("Appointment", "start=ge2024-06-05&start=lt2024-06-30", "rdv2"),
    ("Appointment", "actor=Practitioner/dr&date=2024-06-03", "rdv1"),
    ("AuditEvent", "period-start=2026-01-07", "ae1"),
    ("AuditEvent", "period-start=lt2026-01-07T09:30:00Z", ""),
    ("AuditEvent", "date=ge2026-01-07T09:30:00Z&agent=Practitioner/dr", "ae1"),
])
def test_french_search_parameters(service: SearchService, resource_type: str, query: str, expected: str) -> None:
    params = [tuple(p.split("=", 1)) for p in query.split("&")]
    assert id_set(service.search(resource_type, params, base_url=BASE, strict=True)) == set(expected.split())
