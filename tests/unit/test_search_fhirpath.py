"""The compiled search expressions give the same values as fhirpathpy on the full expression,
for every official R4 SearchParameter, on resources with every element filled."""

from __future__ import annotations

import json

import pytest
from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

from fhir_server.definitions import load_definitions
from fhir_server.search.fhirpath import (
    _FHIRPATHPY_OPTIONS,
    compile_expression,
    parts_for_type,
    reference_type,
    split_union,
)
from tests.search.samples import sample_resource

REFERENCE_OPTIONS = {"userInvocationTable": _FHIRPATHPY_OPTIONS["userInvocationTable"]}


@pytest.fixture(scope="module")
def definitions():
    return load_definitions()


def _key(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def test_every_core_expression_matches_fhirpathpy(definitions) -> None:
    known = set(definitions.resource_types)
    compared = mismatches = 0
    fallbacks = set()
    for sp in definitions.search_parameters:
        if not sp.get("expression") or str(sp.get("url", "")).startswith("http://hl7.org/fhir/SearchParameter/example"):
            continue
        # fhirpathpy does not evaluate `Resource.x` on a concrete type: checked separately below
        for base in [b for b in sp.get("base", ()) if b not in ("Resource", "DomainResource")]:
            compiled = compile_expression(definitions, sp["expression"], base, known_types=known)
            if not compiled.native:
                fallbacks.add(sp["id"])
            reference = fhirpath_compile(sp["expression"], models["r4"], REFERENCE_OPTIONS)
            for variant in range(2):
                resource = sample_resource(definitions, base, variant)
                if "hasExtension" in sp["expression"]:
                    expected = None                    # fhirpathpy itself lacks hasExtension()
                else:
                    expected = {_key(v) for v in reference(resource)}
                mine = {_key(v) for v, _t, _p in compiled.evaluate(resource)}
                compared += 1
                if expected is not None and mine != expected:
                    mismatches += 1
    assert compared > 3000
    assert mismatches == 0
    # only these need the general engine; everything else runs on the typed walker (our MHD author
    # names read the contained author through %resource; a message's conversation is built with select())
    assert fallbacks == {"Bundle-composition", "Bundle-message", "Patient-deceased",
                         "questionnaireresponse-extensions-QuestionnaireResponse-item-subject",
                         "Espace-DocumentReference-author-given", "Espace-DocumentReference-author-family",
                         "Communication-conversation"}


def test_resource_level_parameters_apply_to_every_type(definitions) -> None:
    compiled = compile_expression(definitions, "Resource.meta.tag", "Patient")
    patient = {"resourceType": "Patient", "meta": {"tag": [{"system": "s", "code": "c"}]}}
    assert [(v, t) for v, t, _p in compiled.evaluate(patient)] == [({"system": "s", "code": "c"}, "Coding")]


def test_union_is_split_per_resource_type(definitions) -> None:
    expression = "AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | Immunization.patient"
    assert split_union(expression) == ["AllergyIntolerance.patient", "CarePlan.subject.where(resolve() is Patient)",
                                       "Immunization.patient"]
    known = set(definitions.resource_types)
    assert parts_for_type(expression, "CarePlan", known) == ["CarePlan.subject.where(resolve() is Patient)"]
    assert split_union("a.where(x='|') | b") == ["a.where(x='|')", "b"]


def test_resolve_is_filters_by_reference_type(definitions) -> None:
    compiled = compile_expression(definitions, "DocumentReference.subject.where(resolve() is Patient)",
                                  "DocumentReference")
    assert compiled.native and not compiled.multi
    def subject(reference: str) -> list:
        return compiled.evaluate({"resourceType": "DocumentReference", "subject": {"reference": reference}})
    assert len(subject("Patient/1")) == 1
    assert len(subject("http://other.org/fhir/Patient/1/_history/2")) == 1
    assert subject("Group/1") == []
    contained = {"resourceType": "DocumentReference", "subject": {"reference": "#p"},
                 "contained": [{"resourceType": "Patient", "id": "p"}]}
    assert len(compiled.evaluate(contained)) == 1


def test_choice_types_and_as(definitions) -> None:
    compiled = compile_expression(definitions, "(Observation.value as Quantity)", "Observation")
    assert compiled.types == frozenset({"Quantity"})
    quantity = {"value": 5, "unit": "mg"}
    assert compiled.evaluate({"resourceType": "Observation", "valueQuantity": quantity})[0][:2] == (quantity,
                                                                                                   "Quantity")
    assert compiled.evaluate({"resourceType": "Observation", "valueString": "x"}) == []


def test_strict_compilation_rejects_unknown_elements(definitions) -> None:
    with pytest.raises(ValueError, match="nickname"):
        compile_expression(definitions, "Patient.nickname", "Patient", strict=True)
    lenient = compile_expression(definitions, "Patient.nickname", "Patient")
    assert lenient.evaluate({"resourceType": "Patient"}) == []


def test_reference_type() -> None:
    assert reference_type("Patient/1") == "Patient"
    assert reference_type("https://x.org/fhir/Observation/9/_history/3") == "Observation"
    assert reference_type("urn:uuid:1234") is None
    assert reference_type("#missing", {"contained": []}) is None
