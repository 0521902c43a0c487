"""Reference targets checked the way HAPI does: a reference conforms when its target meets any one of the
target profiles, and a core type listed among them (`Reference(Patient | FRCorePatient)`) is met by any
resource of that type; a specific profile alone must be met by the resolved target. Aggregation modes
(contained / bundled / referenced, as PDSm sets on a document's author) are reported as warnings."""

from __future__ import annotations

import copy

import pytest

from fhir_server.definitions import Definitions, load_definitions
from fhir_server.terminology import Terminology
from fhir_server.validation import ProfileValidator

CORE = "http://hl7.org/fhir/StructureDefinition/"
EX = "https://espace.example/fhir/StructureDefinition/"
NARRATIVE = {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Exemple</div>"}


def profile(name: str, type_: str, elements: list[dict]) -> dict:
    return {
        "resourceType": "StructureDefinition", "url": EX + name, "name": name, "title": name, "status": "active",
        "kind": "resource", "abstract": False, "type": type_, "derivation": "constraint",
        "baseDefinition": CORE + type_, "differential": {"element": elements},
    }


def reference_to(path: str, *targets: str) -> dict:
    return {"id": path, "path": path, "type": [{"code": "Reference", "targetProfile": list(targets)}]}


PATIENT_FR = profile("patient-fr", "Patient", [{"id": "Patient.gender", "path": "Patient.gender", "min": 1}])
ORGANISATION_FR = profile("organisation-fr", "Organization", [
    {"id": "Organization.identifier", "path": "Organization.identifier", "min": 1}])
RESULTAT = profile("resultat", "Observation", [
    # the base type and a profile of it: any Patient will do
    reference_to("Observation.subject", CORE + "Patient", EX + "patient-fr"),
    # a profile only: the target must meet it
    reference_to("Observation.focus", EX + "patient-fr"),
    # base Patient, or an Organization meeting its profile
    reference_to("Observation.performer", CORE + "Patient", EX + "organisation-fr"),
])

AGGREGATED = profile("resultat-agrege", "Observation", [
    {"id": "Observation.performer", "path": "Observation.performer", "type": [
        {"code": "Reference", "targetProfile": [CORE + "Practitioner"], "aggregation": ["contained"]}]},
    {"id": "Observation.hasMember", "path": "Observation.hasMember", "type": [
        {"code": "Reference", "targetProfile": [CORE + "Observation"], "aggregation": ["bundled"]}]},
])

STORE = {
    "Patient/sans-genre": {"resourceType": "Patient", "id": "sans-genre", "text": NARRATIVE},
    "Patient/avec-genre": {"resourceType": "Patient", "id": "avec-genre", "text": NARRATIVE, "gender": "male"},
    "Organization/sans-finess": {"resourceType": "Organization", "id": "sans-finess", "text": NARRATIVE,
                                 "name": "Cabinet"},
    "Organization/chu": {"resourceType": "Organization", "id": "chu", "text": NARRATIVE, "name": "CHU",
                         "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "350000139"}]},
}


@pytest.fixture(scope="module")
def validator() -> ProfileValidator:
    core = load_definitions()
    definitions = Definitions(structures=dict(core.structures), value_sets=dict(core.value_sets),
                              code_systems=dict(core.code_systems))
    for sd in (PATIENT_FR, ORGANISATION_FR, RESULTAT, AGGREGATED):
        definitions.add(copy.deepcopy(sd))
    return ProfileValidator(definitions, Terminology(definitions), lambda ref: copy.deepcopy(STORE.get(ref)))


def a_result(**references: object) -> dict:
    return {"resourceType": "Observation", "text": NARRATIVE, "status": "final", "code": {"text": "glycémie"},
            **references}


def errors(validator: ProfileValidator, resource: dict) -> list[tuple[str, str]]:
    return [(i.expression[0] if i.expression else "", i.diagnostics)
            for i in validator.validate(resource, [EX + "resultat"]) if i.severity == "error"]


@pytest.mark.parametrize(("references", "expected"), [
    # base type listed: the FR profile is not imposed on the target
    ({"subject": {"reference": "Patient/sans-genre"}}, []),
    ({"subject": {"reference": "Patient/avec-genre"}}, []),
    ({"subject": {"reference": "Group/g"}}, [("Observation.subject", "a reference to a Group is not allowed")]),
    # profile only: the resolved target must meet it; an unresolvable one is not an error
    ({"focus": [{"reference": "Patient/avec-genre"}]}, []),
    ({"focus": [{"reference": "Patient/sans-genre"}]},
     [("Observation.focus[0]", f"does not conform to {EX}patient-fr")]),
    ({"focus": [{"reference": "Patient/inconnu"}]}, []),
    # one base type and another type's profile: each type is held to its own rule
    ({"performer": [{"reference": "Patient/sans-genre"}, {"reference": "Organization/chu"}]}, []),
    ({"performer": [{"reference": "Organization/sans-finess"}]},
     [("Observation.performer[0]", f"does not conform to {EX}organisation-fr")]),
], ids=["base-listed-any-patient", "base-listed-conforming", "base-listed-other-type", "profile-met",
        "profile-not-met", "profile-unresolved", "mixed-met", "mixed-organisation-not-met"])
def test_target_profiles(validator: ProfileValidator, references: dict, expected: list[tuple[str, str]]) -> None:
    found = errors(validator, a_result(**references))
    assert [e for e, _ in found] == [e for e, _ in expected], found
    assert all(text in diagnostics for (_, diagnostics), (_, text) in zip(found, expected, strict=True))


def test_a_contained_target_is_still_held_to_the_profiles_it_claims(validator: ProfileValidator) -> None:
    claiming = {"resourceType": "Patient", "id": "p", "meta": {"profile": [EX + "patient-fr"]}}
    observation = a_result(contained=[claiming], subject={"reference": "#p"})
    assert errors(validator, observation) == [
        ("Observation.contained[0].gender", "Patient.gender (profile patient-fr): at least 1 required, 0 found")]
    unclaimed = a_result(contained=[{"resourceType": "Patient", "id": "p"}], subject={"reference": "#p"})
    assert errors(validator, unclaimed) == []


# -- aggregation: where the target must be ---------------------------------------------------------------
DOCTOR = {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Bertrand", "given": ["Hélène"]}]}


def aggregation_warnings(validator: ProfileValidator, resource: dict) -> list[tuple[str, str]]:
    return [(i.expression[0], i.diagnostics) for i in validator.validate(resource)
            if i.severity == "warning" and "aggregation" in i.diagnostics]


def an_aggregated_result(**elements: object) -> dict:
    return a_result(meta={"profile": [EX + "resultat-agrege"]}, **elements)


def test_a_contained_aggregation_is_met_by_a_contained_target_only(validator: ProfileValidator) -> None:
    contained = an_aggregated_result(contained=[DOCTOR], performer=[{"reference": "#dr"}])
    assert aggregation_warnings(validator, contained) == []
    elsewhere = an_aggregated_result(performer=[{"reference": "Practitioner/dr"}])
    assert aggregation_warnings(validator, elsewhere) == [(
        "Observation.performer[0]", "Observation.performer[0]: the reference Practitioner/dr should point to a "
        "contained resource (aggregation), not to a resource outside the bundle")]
    assert [i for i in validator.validate(elsewhere) if i.severity == "error"] == []
    logical = an_aggregated_result(performer=[{"identifier": {"system": "https://rpps.esante.gouv.fr",
                                                              "value": "10003456786"}}])
    assert aggregation_warnings(validator, logical) == []


def test_a_bundled_aggregation_is_met_by_an_entry_of_the_same_bundle(validator: ProfileValidator) -> None:
    member = {"fullUrl": "urn:uuid:0b4f6a2e-7c1d-4d3e-9a8b-5c6d7e8f9a01", "resource": a_result()}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        member, {"fullUrl": "urn:uuid:0b4f6a2e-7c1d-4d3e-9a8b-5c6d7e8f9a02",
                 "resource": an_aggregated_result(hasMember=[{"reference": member["fullUrl"]}])}]}
    assert aggregation_warnings(validator, bundle) == []
    bundle["entry"][1]["resource"]["hasMember"] = [{"reference": "Observation/ailleurs"}]
    assert [e for e, _ in aggregation_warnings(validator, bundle)] == ["Bundle.entry[1].resource.hasMember[0]"]
