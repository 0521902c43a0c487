"""Reference searches: Type/id, bare id, absolute URL, :identifier, :[type], chains to any
depth, reverse chains (_has), _list, and composite parameters."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhir_server.engine.errors import FhirError
from fhir_server.search import SearchService
from tests.search.conftest import BASE, id_set, put

INS = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "https://rpps.esante.gouv.fr"
LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"


def document(ident: str, subject: dict, **extra: object) -> dict:
    return {"resourceType": "DocumentReference", "id": ident, "status": "current", "subject": subject,
            "content": [{"attachment": {"contentType": "application/pdf"}}], **extra}


def blood_pressure(ident: str, systolic: str, diastolic: str) -> dict:
    def component(code: str, value: str) -> dict:
        return {"code": {"coding": [{"system": LOINC, "code": code}]},
                "valueQuantity": {"value": Decimal(value), "system": UCUM, "code": "mm[Hg]"}}
    return {"resourceType": "Observation", "id": ident, "status": "final", "subject": {"reference": "Patient/pc"},
            "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
            "component": [component("8480-6", systolic), component("8462-4", diastolic)]}


RESOURCES = [
    {"resourceType": "Organization", "id": "org1", "name": "Clinique Saint-Jean"},
    {"resourceType": "Organization", "id": "org2", "name": "Hôpital Nord"},
    {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "House"}],
     "identifier": [{"system": RPPS, "value": "10001"}]},
    {"resourceType": "Practitioner", "id": "dr2", "name": [{"family": "Grey"}]},
    {"resourceType": "PractitionerRole", "id": "role1", "practitioner": {"reference": "Practitioner/dr1"},
     "organization": {"reference": "Organization/org1"}},
    {"resourceType": "Patient", "id": "pa", "name": [{"family": "Lefèvre"}],
     "identifier": [{"system": INS, "value": "111"}], "managingOrganization": {"reference": "Organization/org1"},
     "generalPractitioner": [{"reference": "Practitioner/dr1"}]},
    {"resourceType": "Patient", "id": "pb", "name": [{"family": "Lefebvre"}],
     "identifier": [{"system": INS, "value": "222"}], "managingOrganization": {"reference": "Organization/org2"},
     "generalPractitioner": [{"reference": "Practitioner/dr2"}]},
    {"resourceType": "Patient", "id": "pc", "name": [{"family": "Petit"}]},
    document("d1", {"reference": "Patient/pa"}, author=[{"reference": "PractitionerRole/role1"}]),
    document("d2", {"reference": "Patient/pb", "identifier": {"system": INS, "value": "222"}},
             author=[{"reference": "Practitioner/dr2"}]),
    document("d3", {"reference": "Patient/pa/_history/2"}, status="superseded",
             author=[{"identifier": {"system": RPPS, "value": "10001"}}],
             relatesTo=[{"code": "replaces", "target": {"reference": "DocumentReference/d1"}}]),
    document("d4", {"reference": "http://other.org/fhir/Patient/x"}),
    {"resourceType": "Observation", "id": "obs1", "status": "final", "subject": {"reference": "Patient/pa"},
     "code": {"coding": [{"system": LOINC, "code": "1234-5"}]}, "performer": [{"reference": "Practitioner/dr1"}]},
    {"resourceType": "List", "id": "l1", "status": "current", "mode": "working",
     "entry": [{"item": {"reference": "Patient/pa"}}, {"item": {"reference": "Patient/pc"}},
               {"item": {"reference": "Practitioner/dr1"}}]},
    blood_pressure("bp1", "150", "90"),
    blood_pressure("bp2", "110", "95"),
]


@pytest.fixture(scope="module", autouse=True)
def data(store, registry) -> None:
    put(store, registry, *RESOURCES)


def check(service: SearchService, resource_type: str, query: str, expected: str) -> None:
    params = [tuple(p.split("=", 1)) for p in query.split("&")]
    bundle = service.search(resource_type, params, base_url=BASE, strict=True)
    assert id_set(bundle) == set(expected.split()), query


@pytest.mark.parametrize(("query", "expected"), [
    ("subject=Patient/pa", "d1 d3"),                         # the version of d3's reference is dropped
    ("subject=pa", "d1 d3"),
    ("patient=pa", "d1 d3"),
    ("subject:Patient=pa", "d1 d3"),
    (f"subject={BASE}/Patient/pa", "d1 d3"),                 # our own absolute URL is a local reference
    ("subject=http://other.org/fhir/Patient/x", "d4"),
    ("subject=Patient/pa,Patient/pb", "d1 d2 d3"),
    (f"author:identifier={RPPS}|10001", "d3"),
    (f"patient:identifier={INS}|222", "d2"),                 # Reference.identifier
    (f"patient.identifier={INS}|111", "d1 d3"),              # chained: the patient's identifier
    ("patient.family=lefevre", "d1 d3"),
    ("patient.family:exact=Lefebvre", "d2"),
    ("subject:Patient.general-practitioner.family=house", "d1 d3"),
    ("author:PractitionerRole.organization.name=clinique", "d1"),
    ("author.organization.name=clinique", "d1"),
    ("author:PractitionerRole.practitioner.identifier=10001", "d1"),
    ("relatesto=DocumentReference/d1", "d3"),
    ("author:missing=true", "d4"),                           # d3's author is an identifier only
    ("author:missing=false", "d1 d2 d3"),
    (f"patient.identifier={INS}|999", ""),
])
def test_document_reference(service: SearchService, query: str, expected: str) -> None:
    check(service, "DocumentReference", query, expected)


@pytest.mark.parametrize(("resource_type", "query", "expected"), [
    ("Patient", "_has:Observation:patient:code=1234-5", "pa"),
    ("Patient", "_has:Observation:subject:performer=Practitioner/dr1", "pa"),
    ("Patient", "_has:DocumentReference:subject:author=Practitioner/dr2", "pb"),
    ("Patient", "_has:DocumentReference:subject:status=superseded", "pa"),
    ("Patient", "_has:Observation:patient:code=0000-0", ""),
    ("Practitioner", "_has:Observation:performer:patient.family=lefevre", "dr1"),
    ("Practitioner", "_has:PractitionerRole:practitioner:_has:DocumentReference:author:status=current", "dr1"),
    ("Patient", "_list=l1", "pa pc"),
    ("Patient", "_list=l1&family=petit", "pc"),
    ("Patient", "general-practitioner.family=house", "pa"),
    ("Patient", "organization.name=clinique", "pa"),
    ("Patient", "organization.name=hopital,clinique", "pa pb"),
])
def test_reverse_chains_and_lists(service: SearchService, resource_type: str, query: str, expected: str) -> None:
    check(service, resource_type, query, expected)


@pytest.mark.parametrize(("query", "expected"), [
    (f"component-code-value-quantity={LOINC}|8480-6$gt140", "bp1"),
    (f"component-code-value-quantity={LOINC}|8462-4$gt92", "bp2"),
    ("component-code-value-quantity=8480-6$lt100", ""),   # 95 is the diastolic, not the systolic
    (f"component-code-value-quantity=8480-6$110|{UCUM}|mm[Hg],8462-4$90", "bp1 bp2"),
])
def test_composite(service: SearchService, query: str, expected: str) -> None:
    check(service, "Observation", query, expected)


@pytest.mark.parametrize(("resource_type", "name", "value"), [
    ("Observation", "component-code-value-quantity", "8480-6"),
    ("DocumentReference", "status.name", "x"),                    # not a reference: cannot chain
    ("DocumentReference", "subject:Banana", "1"),
    ("Patient", "_has:Observation:patient", "1"),
    ("Patient", "_has:Nothing:patient:code", "1"),
    ("Patient", "_has:Observation:code:status", "final"),         # code is not a reference
])
def test_malformed(service: SearchService, resource_type: str, name: str, value: str) -> None:
    with pytest.raises(FhirError) as caught:
        service.search(resource_type, [(name, value)], base_url=BASE)
    assert caught.value.status == 400


def test_unknown_chained_parameter_is_a_warning_unless_strict(service: SearchService) -> None:
    bundle = service.search("DocumentReference", [("patient.nickname", "x")], base_url=BASE)
    assert len(id_set(bundle)) == 4
    outcome = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome[0]["issue"][0]["severity"] == "warning"
    with pytest.raises(FhirError):
        service.search("DocumentReference", [("patient.nickname", "x")], base_url=BASE, strict=True)
