"""Table-driven searches per parameter type and modifier, against data with known answers:
French accents, partial dates, timezones, several codings per concept, UCUM units."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhir_server.engine.errors import FhirError
from fhir_server.search import SearchService
from tests.search.conftest import BASE, id_set, put

INS = "urn:oid:1.2.250.1.213.1.4.8"
FR_CORE_TYPES = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
LOINC, SNOMED, UCUM = "http://loinc.org", "http://snomed.info/sct", "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

PATIENTS = [
    {"resourceType": "Patient", "id": "p1", "active": True, "gender": "female", "birthDate": "1980-05-01",
     "meta": {"lastUpdated": "2024-01-10T10:00:00Z", "tag": [{"code": "test"}],
              "profile": ["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"],
              "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
              "source": "https://dpi.example.org"},
     "name": [{"family": "Dupont", "given": ["Élodie"]}],
     "identifier": [{"system": INS, "value": "2800575123456",
                     "type": {"coding": [{"system": FR_CORE_TYPES, "code": "INS-NIR"}], "text": "NIR"}}],
     "address": [{"city": "Saint-Étienne", "postalCode": "42000"}]},
    {"resourceType": "Patient", "id": "p2", "active": False, "gender": "male", "birthDate": "1975",
     "meta": {"lastUpdated": "2024-02-10T10:00:00Z"},
     "name": [{"family": "MARTIN", "given": ["HÉLÈNE"]}],
     "identifier": [{"system": INS, "value": "1750000000000"}]},
    {"resourceType": "Patient", "id": "p3", "gender": "female", "birthDate": "1980-05",
     "meta": {"lastUpdated": "2024-03-10T10:00:00Z"},
     "name": [{"family": "Durand", "given": ["Hélène"]}],
     "identifier": [{"value": "1750000000000"}]},
    {"resourceType": "Patient", "id": "p4", "birthDate": "2001-12-31",
     "meta": {"lastUpdated": "2024-04-10T10:00:00Z"},
     "name": [{"family": "Duponte", "given": ["Jean-Pierre"]}], "address": [{"city": "Lyon"}]},
]


def quantity(value: str, code: str, system: str = UCUM) -> dict:
    return {"value": Decimal(value), "unit": code, "system": system, "code": code}


OBSERVATIONS = [
    {"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/p1"},
     "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
     "code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Pression artérielle systolique"},
                         {"system": SNOMED, "code": "271649006"}]},
     "effectiveDateTime": "2024-03-01T23:30:00-05:00", "valueQuantity": quantity("120", "mm[Hg]")},
    {"resourceType": "Observation", "id": "o2", "status": "preliminary", "subject": {"reference": "Patient/p2"},
     "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
     "effectivePeriod": {"start": "2024-03-01", "end": "2024-03-10"}, "valueQuantity": quantity("5", "mg")},
    # two codings from two systems: `loinc|271649006` must not match system of one, code of the other
    {"resourceType": "Observation", "id": "o3", "status": "final", "subject": {"reference": "Patient/p3"},
     "code": {"coding": [{"system": LOINC, "code": "2345-7"}, {"system": SNOMED, "code": "8480-6"}]},
     "effectiveDateTime": "2024-03", "valueQuantity": quantity("0.005", "g")},
    {"resourceType": "Observation", "id": "o4", "status": "amended", "code": {"text": "Glycémie"},
     "effectiveDateTime": "2024-03-02T00:30:00+01:00", "valueString": "normale"},
]

RISKS = [{"resourceType": "RiskAssessment", "id": f"r{i}", "status": "final", "subject": {"reference": "Patient/p1"},
          "prediction": [{"probabilityDecimal": Decimal(p)}]} for i, p in ((1, "0.25"), (2, "0.8"), (3, "100"))]

QUESTIONNAIRES = [{"resourceType": "Questionnaire", "id": i, "status": "active", "url": u} for i, u in (
    ("q1", "http://example.org/fhir/Questionnaire/phq9"), ("q2", "http://example.org/fhir/Questionnaire/phq9-v2"),
    ("q3", "http://other.org/gad7"), ("q4", "http://example.org/"), ("q5", "urn:oid:1.2.250.1.213"))]

# condition-clinical (R4 core): active > {recurrence, relapse}; inactive > {remission, resolved}
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITIONS = [{"resourceType": "Condition", "id": i, "subject": {"reference": "Patient/p1"},
               "clinicalStatus": {"coding": [{"system": system, "code": code}]}} for i, system, code in (
    ("c1", CLINICAL, "active"), ("c2", CLINICAL, "recurrence"), ("c3", CLINICAL, "relapse"),
    ("c4", CLINICAL, "remission"), ("c5", CLINICAL, "resolved"), ("c6", "http://other.org/status", "active"))]


@pytest.fixture(scope="module", autouse=True)
def data(store, registry) -> None:
    put(store, registry, *PATIENTS, *OBSERVATIONS, *RISKS, *QUESTIONNAIRES, *CONDITIONS)


def found(service: SearchService, resource_type: str, query: str) -> set[str]:
    params = [tuple(p.split("=", 1)) for p in query.split("&")] if query else []
    bundle = service.search(resource_type, params, base_url=BASE, strict=True)
    return id_set(bundle)


def check(service: SearchService, resource_type: str, query: str, expected: str) -> None:
    assert found(service, resource_type, query) == set(expected.split()), query


@pytest.mark.parametrize(("query", "expected"), [
    ("name=elodie", "p1"),
    ("name=ÉLODIE", "p1"),
    ("given=Hélène", "p2 p3"),                       # Hélène finds HÉLÈNE and Hélène
    ("given=HELENE", "p2 p3"),
    ("family=dup", "p1 p4"),                          # prefix by default
    ("family=dupont", "p1 p4"),
    ("family:exact=Dupont", "p1"),
    ("family:exact=dupont", ""),
    ("family:contains=PON", "p1 p4"),
    ("given=jean", "p4"),
    ("name=dupont,martin", "p1 p2 p4"),               # OR
    ("family=dup&given=jean", "p4"),                  # AND
    ("address-city=saint-etienne", "p1"),
    ("address-city=st", ""),
    ("address-city:missing=true", "p2 p3"),
])
def test_string(service: SearchService, query: str, expected: str) -> None:
    check(service, "Patient", query, expected)


@pytest.mark.parametrize(("query", "expected"), [
    ("gender=female", "p1 p3"),
    ("gender=female,male", "p1 p2 p3"),
    ("gender:not=female", "p2 p4"),                  # :not includes resources without a value
    ("gender:missing=true", "p4"),
    ("gender:missing=false", "p1 p2 p3"),
    ("gender:in=http://hl7.org/fhir/ValueSet/administrative-gender", "p1 p2 p3"),
    ("gender:not-in=http://hl7.org/fhir/ValueSet/administrative-gender", "p4"),
    (f"identifier={INS}|2800575123456", "p1"),
    ("identifier=1750000000000", "p2 p3"),
    (f"identifier={INS}|", "p1 p2"),
    ("identifier=|1750000000000", "p3"),
    (f"identifier:of-type={FR_CORE_TYPES}|INS-NIR|2800575123456", "p1"),
    (f"identifier:of-type={FR_CORE_TYPES}|INS-NIR|1750000000000", ""),
    ("identifier:text=nir", "p1"),
    ("active=true", "p1"),
    ("active=false", "p2"),
    ("_tag=test", "p1"),
    ("_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R", "p1"),
    ("_profile=https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient", "p1"),
    ("_source=https://dpi.example.org", "p1"),
    ("_id=p1,p3", "p1 p3"),
    ("_id:not=p1", "p2 p3 p4"),
])
def test_token(service: SearchService, query: str, expected: str) -> None:
    check(service, "Patient", query, expected)


@pytest.mark.parametrize(("query", "expected"), [
    (f"code={LOINC}|8480-6", "o1"),
    ("code=8480-6", "o1 o3"),                          # the code in any system
    (f"code={SNOMED}|271649006", "o1"),
    (f"code={LOINC}|271649006", ""),                   # system and code from different codings
    (f"code={SNOMED}|8480-6", "o3"),
    ("code:text=pression", "o1"),
    ("code:text=glycemie", "o4"),
    ("code:missing=true", ""),                         # o4's code has only a text: still a value
    ("code:missing=false", "o1 o2 o3 o4"),
    ("category:in=http://hl7.org/fhir/ValueSet/observation-category", "o1"),
    ("status=final", "o1 o3"),
    ("status:not=final", "o2 o4"),
])
def test_token_on_codings(service: SearchService, query: str, expected: str) -> None:
    check(service, "Observation", query, expected)


@pytest.mark.parametrize(("query", "expected"), [
    # o1 2024-03-02T04:30Z, o2 the days 2024-03-01..10, o3 the month 2024-03, o4 2024-03-01T23:30Z;
    # dates without timezone are days in Paris
    ("date=2024-03-02", "o1 o4"),
    ("date=2024-03", "o1 o2 o3 o4"),
    ("date=2024-03-01", ""),
    ("date=2024-03-02T04:30:00Z", "o1"),
    ("date=2024-03-02T05:30%2B01:00".replace("%2B", "+"), "o1"),
    ("date=2024-03-01T23:30:00Z", "o4"),
    ("date=gt2024-03-05", "o2 o3"),
    ("date=lt2024-03-02", "o2 o3"),
    ("date=ge2024-03-02", "o1 o2 o3 o4"),
    ("date=le2024-03-01", "o2 o3"),
    ("date=sa2024-03-01", "o1 o4"),
    ("date=eb2024-03-11", "o1 o2 o4"),
    ("date=ne2024-03-02", "o2 o3"),
    ("date=ne2024-03", ""),
    ("date=ap2024-03-02", "o1 o2 o3 o4"),
    ("date=ap2020-01-01", ""),
    ("date=ge2024-03-02&date=lt2024-03-03", "o1 o2 o3 o4"),
    ("date=2024-02,2024-03-02", "o1 o4"),
    ("date:missing=true", ""),
])
def test_date(service: SearchService, query: str, expected: str) -> None:
    check(service, "Observation", query, expected)


@pytest.mark.parametrize(("query", "expected"), [
    ("birthdate=1980-05", "p1 p3"),
    ("birthdate=1980-05-01", "p1"),                   # p3's whole month is not within that day
    ("birthdate=ge1980-05-15", "p3 p4"),
    ("birthdate=lt1980", "p2"),
    ("_lastUpdated=ge2024-02-10T10:00:00Z", "p2 p3 p4"),
    ("_lastUpdated=gt2024-02-10T10:00:00Z", "p3 p4"),
    ("_lastUpdated=lt2024-02", "p1"),
    ("_lastUpdated=2024-03", "p3"),
    ("_lastUpdated=ne2024-03", "p1 p2 p4"),
])
def test_date_on_patient(service: SearchService, query: str, expected: str) -> None:
    check(service, "Patient", query, expected)


@pytest.mark.parametrize(("query", "expected"), [
    ("probability=0.25", "r1"),
    ("probability=0.3", "r1"),                        # 0.3 means [0.25, 0.35)
    ("probability=0.30", ""),
    ("probability=gt0.5", "r2 r3"),
    ("probability=le0.8", "r1 r2"),
    ("probability=100", "r3"),
    ("probability=1e2", "r3"),
    ("probability=ne0.25", "r2 r3"),
    ("probability=ap90", ""),
    ("probability=ap100", "r3"),
    ("probability=sa0.8", "r3"),
    ("probability=eb0.8", "r1"),
])
def test_number(service: SearchService, query: str, expected: str) -> None:
    check(service, "RiskAssessment", query, expected)


@pytest.mark.parametrize(("query", "expected"), [
    ("value-quantity=5", "o2"),                       # value only: units ignored
    (f"value-quantity=5|{UCUM}|mg", "o2 o3"),         # 0.005 g is 5 mg
    (f"value-quantity=0.005|{UCUM}|g", "o2 o3"),
    ("value-quantity=gt100||mm[Hg]", "o1"),
    ("value-quantity=5|http://other|mg", ""),
    ("value-quantity=lt10", "o2 o3"),
    (f"value-quantity=ge4|{UCUM}|kg", ""),
    ("value-quantity:missing=true", "o4"),
])
def test_quantity(service: SearchService, query: str, expected: str) -> None:
    check(service, "Observation", query, expected)


@pytest.mark.parametrize(("query", "expected"), [
    (f"clinical-status:below={CLINICAL}|active", "c1 c2 c3"),
    ("clinical-status:below=active", "c1 c2 c3"),               # the system follows from the binding
    (f"clinical-status:below={CLINICAL}|inactive", "c4 c5"),
    (f"clinical-status:below={CLINICAL}|relapse", "c3"),
    (f"clinical-status:below={CLINICAL}|relapse,{CLINICAL}|remission", "c3 c4"),
    (f"clinical-status:above={CLINICAL}|relapse", "c1 c3"),
    (f"clinical-status:above={CLINICAL}|active", "c1"),
    (f"clinical-status:above={CLINICAL}|resolved", "c5"),
    (f"clinical-status:below={CLINICAL}|no-such-code", ""),     # as HAPI: a code outside the system, nothing
    (f"clinical-status:below={CLINICAL}|active&clinical-status:not={CLINICAL}|active", "c2 c3"),
])
def test_token_subsumption(service: SearchService, query: str, expected: str) -> None:
    check(service, "Condition", query, expected)


@pytest.mark.parametrize(("query", "expected"), [
    ("gender:below=female", "p1 p3"),                             # codes stored without their system
    ("gender:above=http://hl7.org/fhir/administrative-gender|male", "p2"),
])
def test_code_subsumption(service: SearchService, query: str, expected: str) -> None:
    check(service, "Patient", query, expected)


@pytest.mark.parametrize(("query", "expected"), [
    ("url=http://example.org/fhir/Questionnaire/phq9", "q1"),
    ("url:below=http://example.org/fhir", "q1 q2"),
    ("url:below=http://example.org/fhir/Questionnaire/phq9", "q1 q2"),       # "starts with"
    ("url:below=http://example.org/", "q1 q2 q4"),
    ("url:above=http://example.org/fhir/Questionnaire/phq9/extra", "q1 q4"),
    ("url:above=http://example.org/fhir/Questionnaire/phq9/_history/2", "q1 q4"),
    ("url:above=http://example.org/fhir/Questionnaire/phq9-v2", "q2 q4"),    # by path segment: not phq9
    ("url:above=http://other.org/gad7", "q3"),
    ("url=http://example.org/fhir/Questionnaire", ""),
    ("url=urn:oid:1.2.250.1.213", "q5"),
])
def test_uri(service: SearchService, query: str, expected: str) -> None:
    check(service, "Questionnaire", query, expected)


@pytest.mark.parametrize(("resource_type", "query", "expression"), [
    ("Observation", "date=2024-13-01", "date"),
    ("Observation", "date=xx2024", "date"),
    ("Observation", "date=2024-03-02T10", "date"),
    ("RiskAssessment", "probability=abc", "probability"),
    ("Observation", "value-quantity=5|mg", "value-quantity"),
    ("Patient", "gender:missing=maybe", "gender:missing"),
    ("Patient", "identifier:of-type=x|y", "identifier:of-type"),
    ("Observation", "subject=Patient/p1/bad id", "subject"),
    ("Observation", "code:below=http://loinc.org|8480-6", "code:below"),       # a system we do not hold
    ("Condition", "code:below=38341003", "code:below"),                      # no system, none from the binding
    ("Condition", f"clinical-status:above={CLINICAL}|", "clinical-status:above"),
    ("Questionnaire", "url:below=urn:oid:1.2", "url:below"),                 # URLs only, not URNs
    ("Questionnaire", "url:above=urn:oid:1.2.250.1.213.1", "url:above"),
])
def test_malformed_values_are_400_naming_the_parameter(service: SearchService, resource_type: str, query: str,
                                                       expression: str) -> None:
    name, value = query.split("=", 1)
    with pytest.raises(FhirError) as caught:
        service.search(resource_type, [(name, value)], base_url=BASE)
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == (expression,)
