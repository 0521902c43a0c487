"""What `extract_index` stores for each parameter type (the `_index` layout of index.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from fhir_server.definitions import load_definitions
from fhir_server.search import SearchRegistry
from fhir_server.search.normalize import DATE_MAX

PDSM_ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry(load_definitions())


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_patient(registry: SearchRegistry) -> None:
    index = registry.extract_index({
        "resourceType": "Patient", "id": "p1", "active": True, "gender": "female", "birthDate": "1980-05-01",
        "name": [{"use": "official", "family": "Dupont", "given": ["Élodie", "Marie"]}],
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "2800575123456",
                        "type": {"coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                                             "code": "INS-NIR"}], "text": "NIR"}}],
        "telecom": [{"system": "phone", "value": "0612345678"}],
        "generalPractitioner": [{"reference": "Practitioner/dr1", "identifier": {"system": "rpps", "value": "10001"}}],
    })
    assert index["family"] == ["dupont"] and index["family:exact"] == ["Dupont"]
    assert index["given"] == ["elodie", "marie"]
    assert set(index["name"]) == {"dupont", "elodie", "marie", "elodie marie dupont"}
    # a plain code: one entry, stored as a scalar (single-valued parameter)
    assert index["gender"] == "female" and index["active"] == "true"
    assert index["identifier"] == ["2800575123456", "urn:oid:1.2.250.1.213.1.4.8|2800575123456"]
    assert index["identifier:of-type"] == [
        "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203|INS-NIR|2800575123456"]
    assert index["identifier:text"] == ["nir"]
    assert index["phone"] == ["0612345678", "phone|0612345678"]
    assert index["general-practitioner"] == ["Practitioner/dr1"]
    assert index["general-practitioner:identifier"] == ["10001", "rpps|10001"]
    # birthDate has no timezone: the day in Paris
    assert index["birthdate"] == {"lo": utc(1980, 4, 30, 22), "hi": utc(1980, 5, 1, 22)}


def test_document_reference(registry: SearchRegistry) -> None:
    index = registry.extract_index({
        "resourceType": "DocumentReference", "id": "d1", "status": "current",
        "extension": [{"url": PDSM_ARCHIVED, "valueBoolean": False}],
        "subject": {"reference": "Patient/p1/_history/3"},
        "date": "2024-05-01T10:00:00+02:00",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Compte rendu"}]},
        "context": {"period": {"start": "2024-05-01T09:00:00+02:00"}},
        "content": [{"attachment": {"contentType": "application/pdf", "creation": "2024-05-01"}}],
    })
    assert index["status"] == "current"
    assert index["isArchived"] == ["false"]
    assert index["patient"] == "Patient/p1" and index["subject"] == "Patient/p1"
    # DocumentReference.date is an instant: stored as one point
    assert index["date"] == utc(2024, 5, 1, 8)
    assert index["type"] == ["11488-4", "http://loinc.org|11488-4"]
    assert index["type:text"] == ["compte rendu"]
    assert index["period"] == {"lo": utc(2024, 5, 1, 7), "hi": DATE_MAX}
    assert index["period-start"] == {"lo": utc(2024, 5, 1, 7), "hi": utc(2024, 5, 1, 7, 0, 1)}
    assert index["creation"] == [{"lo": utc(2024, 4, 30, 22), "hi": utc(2024, 5, 1, 22)}]
    assert "period-end" not in index


def test_observation_quantity_and_composite(registry: SearchRegistry) -> None:
    index = registry.extract_index({
        "resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": Decimal("120"), "unit": "mmHg", "system": "http://unitsofmeasure.org",
                               "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": {"value": Decimal("80"), "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
        ],
        "valueQuantity": {"value": Decimal("5"), "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
    })
    # `(value as Quantity) | (value as SampledData)`: a union, so stored as a list
    assert index["value-quantity"] == [{"v": Decimal("5"), "s": "http://unitsofmeasure.org", "u": "mg",
                                        "cv": Decimal("0.005"), "cu": "g"}]
    systolic = {"0": ["8480-6", "http://loinc.org|8480-6"],
                "1": {"v": Decimal("120"), "s": "http://unitsofmeasure.org", "u": "mm[Hg]",
                      "cv": Decimal("120"), "cu": "mm[Hg]"}}
    assert systolic in index["component-code-value-quantity"]
    assert len(index["component-code-value-quantity"]) == 2


def test_canonical_references_keep_both_forms(registry: SearchRegistry) -> None:
    index = registry.extract_index({"resourceType": "QuestionnaireResponse", "id": "q", "status": "completed",
                                    "questionnaire": "http://x.org/Questionnaire/phq9|2.0"})
    assert index["questionnaire"] == ["http://x.org/Questionnaire/phq9|2.0", "http://x.org/Questionnaire/phq9"]


def test_meta_parameters(registry: SearchRegistry) -> None:
    index = registry.extract_index({"resourceType": "Patient", "id": "p", "meta": {
        "profile": ["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
        "tag": [{"code": "test"}], "source": "https://dpi.example.org"}})
    assert index["_profile"] == ["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"]
    assert index["_security"] == ["R", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R"]
    assert index["_tag"] == ["test", "|test"]
    assert index["_source"] == "https://dpi.example.org"
    # together as terms too, so that one index per collection serves all four
    assert index["_meta"] == ["_tag=test", "_tag=|test", "_security=R",
                              "_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",
                              "_profile=https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient",
                              "_source=https://dpi.example.org"]
    assert "_meta" not in registry.extract_index({"resourceType": "Patient", "id": "p", "gender": "male"})


def test_composites_know_the_parameter_of_their_first_component(registry: SearchRegistry) -> None:
    """Its index serves the composite search: the parameter reads every element the component does."""
    observation = registry.params_for("Observation")
    assert observation["code-value-quantity"].leading == "code"
    assert observation["component-code-value-quantity"].leading == "component-code"
    assert observation["combo-code-value-quantity"].leading == "combo-code"
    # R4's definition reads `relatesTo.code` with the definition of `relatesTo.target`: no such parameter
    assert registry.param("DocumentReference", "relationship").leading is None


def test_dates_know_how_long_one_value_lasts(registry: SearchRegistry) -> None:
    assert registry.param("Patient", "birthdate").span is not None
    assert registry.param("Immunization", "date").span is not None          # dateTime or string
    assert registry.param("Encounter", "date").span is None                 # a Period may be open-ended
    assert registry.param("Observation", "value-quantity").index_fields == ("_index.value-quantity.v",
                                                                            "_index.value-quantity.cv")


def test_looked_up_strings_store_their_prefixes(registry: SearchRegistry) -> None:
    index = registry.extract_index({"resourceType": "Patient", "id": "p",
                                    "name": [{"family": "Lô", "given": ["Ève Marie"]}, {"family": "Ng"}]})
    assert index["family:prefix"] == ["l", "lo", "n", "ng"]
    assert index["given:prefix"] == ["e", "ev", "eve", "eve m", "eve ma", "eve mar", "eve mari", "eve marie"]
    assert "name:prefix" in index and "address-city:prefix" not in index
    long = registry.extract_index({"resourceType": "Patient", "id": "q", "name": [{"family": "x" * 40}]})
    assert long["family:prefix"] == ["x" * n for n in range(1, 25)]


def test_contained_resources_are_indexed_apart(registry: SearchRegistry) -> None:
    index = registry.extract_index({
        "resourceType": "MedicationRequest", "id": "mr", "status": "active", "intent": "order",
        "medicationReference": {"reference": "#m"}, "subject": {"reference": "Patient/1"},
        "contained": [{"resourceType": "Medication", "id": "m", "code": {"text": "Doliprane"}},
                      {"resourceType": "Medication", "code": {"text": "no id: cannot be addressed"}},
                      {"resourceType": "NotAType", "id": "x"}]})
    assert index["subject"] == "Patient/1" and "medication" not in index
    assert index["_contained"] == [{"_type": "Medication", "_id": "m", "code:text": ["doliprane"]}]


def test_unparsable_values_are_skipped(registry: SearchRegistry) -> None:
    index = registry.extract_index({"resourceType": "Immunization", "id": "i", "status": "completed",
                                    "occurrenceString": "enfance", "patient": {"reference": "#p"},
                                    "vaccineCode": {"text": "DTP"}})
    assert "date" not in index and "patient" not in index
    assert index["vaccine-code:text"] == ["dtp"]


def test_extraction_is_cheap(registry: SearchRegistry) -> None:
    """A guard against regressions to naive extraction (milliseconds per resource)."""
    import time
    document = {"resourceType": "DocumentReference", "id": "d", "status": "current",
                "subject": {"reference": "Patient/1"}, "date": "2024-05-01T10:00:00Z",
                "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
                "content": [{"attachment": {"contentType": "application/pdf"}}]}
    registry.extract_index(document)
    start = time.perf_counter()
    for _ in range(200):
        registry.extract_index(document)
    assert (time.perf_counter() - start) / 200 < 0.001


def test_every_type_indexes_a_fully_filled_resource(registry: SearchRegistry) -> None:
    from tests.search.samples import sample_resource
    empty = []
    meta_only = {"_tag", "_security", "_source", "_profile"}
    for resource_type in registry.resource_types:
        own = {p.code for p in registry.indexed_params(resource_type)} - meta_only
        if own and not registry.extract_index(sample_resource(registry.definitions, resource_type)):
            empty.append(resource_type)
    assert empty == []


def test_composite_components_may_refer_to_the_resource(registry: SearchRegistry) -> None:
    from tests.search.samples import sample_resource
    index = registry.extract_index(sample_resource(registry.definitions, "MolecularSequence"))
    assert index["chromosome-variant-coordinate"] == [{"0": ["1234-5", "http://loinc.org|1234-5"], "1": 3, "2": 3}]
