"""Slicing as the HAPI and Firely validators apply it, on small differential-only profiles written here:
`profile` discriminators (including slices that declare a type without a profile), `value`,
`pattern` and `type` discriminators, open and closed slicing, slices brought by a type profile, and
issue expressions that name the element in error."""

from __future__ import annotations

import copy

import pytest

from fhir_server.definitions import Definitions, load_definitions
from fhir_server.terminology import Terminology
from fhir_server.validation import ProfileValidator

CORE = "http://hl7.org/fhir/StructureDefinition/"
EX = "https://espace.example/fhir/StructureDefinition/"
LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INS = "urn:oid:1.2.250.1.213.1.4.8"
NARRATIVE = {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Exemple</div>"}


def profile(name: str, type_: str, elements: list[dict], base: str | None = None, kind: str = "resource") -> dict:
    return {
        "resourceType": "StructureDefinition", "url": EX + name, "name": name, "title": name, "status": "active",
        "kind": kind, "abstract": False, "type": type_, "derivation": "constraint",
        "baseDefinition": base or CORE + type_, "differential": {"element": elements},
    }


def slice_of(path: str, name: str, min_: int = 0, max_: str = "*", **rest: object) -> dict:
    return {"id": f"{path}:{name}", "path": path, "sliceName": name, "min": min_, "max": max_, **rest}


# A patient profile that some patients meet (gender required) and others do not
PATIENT_FR = profile("patient-fr", "Patient", [{"id": "Patient.gender", "path": "Patient.gender", "min": 1}])

# Entries told apart by the profile of their resource; two slices give a type but no profile
DOSSIER = profile("dossier", "Bundle", [
    {"id": "Bundle.entry", "path": "Bundle.entry",
     "slicing": {"discriminator": [{"type": "profile", "path": "resource"}], "rules": "closed"}},
    slice_of("Bundle.entry", "patient", 1, "1"),
    {"id": "Bundle.entry:patient.resource", "path": "Bundle.entry.resource", "min": 1, "type": [{"code": "Patient"}]},
    slice_of("Bundle.entry", "documents"),
    {"id": "Bundle.entry:documents.resource", "path": "Bundle.entry.resource", "min": 1,
     "type": [{"code": "Binary"}]},
])

# The same with a profiled slice: only conforming patients match it
DOSSIER_FR = profile("dossier-fr", "Bundle", [
    {"id": "Bundle.entry", "path": "Bundle.entry",
     "slicing": {"discriminator": [{"type": "profile", "path": "resource"}], "rules": "open"}},
    slice_of("Bundle.entry", "patient", 1, "1"),
    {"id": "Bundle.entry:patient.resource", "path": "Bundle.entry.resource", "min": 1,
     "type": [{"code": "Patient", "profile": [EX + "patient-fr"]}]},
])

# A choice sliced by profile: each slice restricts value[x] to one datatype, with no datatype profile
MESURE = profile("mesure", "Observation", [
    {"id": "Observation.value[x]", "path": "Observation.value[x]",
     "slicing": {"discriminator": [{"type": "profile", "path": "$this"}], "rules": "closed"}},
    slice_of("Observation.value[x]", "valueQuantity", 0, "1", type=[{"code": "Quantity"}]),
    slice_of("Observation.value[x]", "valueString", 0, "1", type=[{"code": "string"}]),
])

# References sliced by the profile of their target, one slice with any target at all
ORIGINE = profile("origine", "Observation", [
    {"id": "Observation.derivedFrom", "path": "Observation.derivedFrom",
     "slicing": {"discriminator": [{"type": "profile", "path": "resolve()"}], "rules": "open"}},
    slice_of("Observation.derivedFrom", "document", 0, "1",
             type=[{"code": "Reference", "targetProfile": [CORE + "DocumentReference"]}]),
    slice_of("Observation.derivedFrom", "source", 1, "*", type=[{"code": "Reference"}]),
])

# The same slicing by the type of the target, closed, where a slice without targetProfile takes any target
MEMBRES = profile("membres", "Observation", [
    {"id": "Observation.hasMember", "path": "Observation.hasMember",
     "slicing": {"discriminator": [{"type": "type", "path": "resolve()"}], "rules": "closed"}},
    slice_of("Observation.hasMember", "mesures", type=[{"code": "Reference", "targetProfile": [CORE + "Observation"]}]),
    slice_of("Observation.hasMember", "autres", 0, "1", type=[{"code": "Reference"}]),
])

# value on a primitive, pattern on a CodeableConcept, type on a choice, each with its own rules
SUIVI = profile("suivi", "Observation", [
    {"id": "Observation.category", "path": "Observation.category",
     "slicing": {"discriminator": [{"type": "pattern", "path": "$this"}], "rules": "closed"}},
    slice_of("Observation.category", "signes", 1, "1",
             patternCodeableConcept={"coding": [{"system": CATEGORY, "code": "vital-signs"}]}),
    {"id": "Observation.identifier", "path": "Observation.identifier",
     "slicing": {"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}},
    slice_of("Observation.identifier", "local", 0, "1"),
    {"id": "Observation.identifier:local.system", "path": "Observation.identifier.system", "min": 1,
     "fixedUri": "urn:oid:1.2.250.1.71.4.2.2"},
    {"id": "Observation.identifier:local.value", "path": "Observation.identifier.value", "min": 1},
    {"id": "Observation.effective[x]", "path": "Observation.effective[x]",
     "slicing": {"discriminator": [{"type": "type", "path": "$this"}], "rules": "closed"}},
    slice_of("Observation.effective[x]", "effectiveDateTime", 0, "1", type=[{"code": "dateTime"}]),
])

# Slices a type profile brings: an Address profile with an extension slice, required by a Patient profile
COMMUNE = profile("commune", "Extension", kind="complex-type", elements=[
    {"id": "Extension.url", "path": "Extension.url", "fixedUri": EX + "commune"},
    {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1, "type": [{"code": "string"}]},
])
ADRESSE = profile("adresse", "Address", kind="complex-type", elements=[
    slice_of("Address.extension", "commune", 0, "1", type=[{"code": "Extension", "profile": [EX + "commune"]}]),
])
PATIENT_ADRESSE = profile("patient-adresse", "Patient", [
    {"id": "Patient.address", "path": "Patient.address", "type": [{"code": "Address", "profile": [EX + "adresse"]}]},
])
PATIENT_COMMUNE = profile("patient-commune", "Patient", base=EX + "patient-adresse", elements=[
    {"id": "Patient.address", "path": "Patient.address", "min": 1},
    slice_of("Patient.address.extension", "commune", 1, "1"),
])

TEST_PROFILES = [PATIENT_FR, DOSSIER, DOSSIER_FR, MESURE, ORIGINE, MEMBRES, SUIVI, COMMUNE, ADRESSE, PATIENT_ADRESSE,
                 PATIENT_COMMUNE]

STORE = {
    "DocumentReference/cr": {"resourceType": "DocumentReference", "id": "cr", "status": "current",
                             "content": [{"attachment": {"url": "http://x/cr.pdf"}}]},
    "Observation/poids": {"resourceType": "Observation", "id": "poids", "status": "final", "code": {"text": "poids"}},
}


@pytest.fixture(scope="module")
def validator() -> ProfileValidator:
    core = load_definitions()
    definitions = Definitions(structures=dict(core.structures), value_sets=dict(core.value_sets),
                              code_systems=dict(core.code_systems))
    for sd in TEST_PROFILES:
        definitions.add(copy.deepcopy(sd))
    return ProfileValidator(definitions, Terminology(definitions), lambda ref: copy.deepcopy(STORE.get(ref)))


def errors(validator: ProfileValidator, resource: dict, profile_name: str) -> list[tuple[str, str]]:
    """(expression, diagnostics) of each error of `resource` against one of the profiles above."""
    return [(i.expression[0] if i.expression else "", i.diagnostics)
            for i in validator.validate(resource, [EX + profile_name]) if i.severity == "error"]


def expressions(validator: ProfileValidator, resource: dict, profile_name: str) -> list[str]:
    return [expression for expression, _ in errors(validator, resource, profile_name)]


# -- profile discriminator, slice with a type and no profile ---------------------------------------------
PATIENT = {"resourceType": "Patient", "text": NARRATIVE, "gender": "female"}
BINARY = {"resourceType": "Binary", "contentType": "text/plain", "data": "Qm9uam91cg=="}
PRACTITIONER = {"resourceType": "Practitioner", "text": NARRATIVE}


def a_bundle(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:7d1c2b3a-0e4f-4a5b-8c6d-00000000000{i}", "resource": r}
                      for i, r in enumerate(resources)]}


def test_a_slice_typed_without_profile_matches_any_resource_of_that_type(validator: ProfileValidator) -> None:
    assert errors(validator, a_bundle(PATIENT, BINARY, BINARY), "dossier") == []


def test_a_slice_typed_without_profile_does_not_match_another_type(validator: ProfileValidator) -> None:
    found = errors(validator, a_bundle(PATIENT, PRACTITIONER), "dossier")
    assert [e for e, _ in found] == ["Bundle.entry[1]"]
    assert "matches none of the slices" in found[0][1] and "closed" in found[0][1]


def test_a_missing_slice_typed_without_profile_is_reported_on_the_sliced_element(validator: ProfileValidator) -> None:
    found = errors(validator, a_bundle(BINARY), "dossier")
    assert found == [("Bundle.entry", "slice 'patient' of Bundle.entry (profile dossier): at least 1 required, "
                                      "0 found")]


def test_a_profiled_slice_only_matches_resources_that_conform(validator: ProfileValidator) -> None:
    assert errors(validator, a_bundle(PATIENT), "dossier-fr") == []
    without_gender = {k: v for k, v in PATIENT.items() if k != "gender"}
    assert expressions(validator, a_bundle(without_gender), "dossier-fr") == ["Bundle.entry"]   # open: no slice


@pytest.mark.parametrize(("value", "expected"), [
    ({"valueQuantity": {"value": 72, "unit": "kg"}}, []),
    ({"valueString": "72 kg"}, []),
    ({"valueBoolean": True}, ["Observation.valueBoolean"]),
], ids=["quantity", "string", "boolean-closed-out"])
def test_datatype_slices_without_profile_match_their_own_datatype(validator: ProfileValidator, value: dict,
                                                                  expected: list[str]) -> None:
    observation = {"resourceType": "Observation", "text": NARRATIVE, "status": "final", "code": {"text": "poids"},
                   **value}
    assert expressions(validator, observation, "mesure") == expected


@pytest.mark.parametrize(("derived_from", "expected"), [
    ([{"reference": "DocumentReference/cr"}, {"reference": "Observation/poids"}], []),
    ([{"reference": "DocumentReference/cr"}], ["Observation.derivedFrom"]),    # taken by the first slice it fits
    ([{"reference": "Observation/inconnue"}], ["Observation.derivedFrom"]),      # unresolved: no slice
], ids=["both", "first-matching-slice-only", "unresolved"])
def test_reference_slices_by_target_profile(validator: ProfileValidator, derived_from: list[dict],
                                            expected: list[str]) -> None:
    observation = {"resourceType": "Observation", "text": NARRATIVE, "status": "final", "code": {"text": "suivi"},
                   "derivedFrom": derived_from}
    assert expressions(validator, observation, "origine") == expected



@pytest.mark.parametrize(("members", "expected"), [
    ([{"reference": "Observation/poids"}, {"reference": "QuestionnaireResponse/q"}], []),
    ([{"reference": "QuestionnaireResponse/q"}, {"reference": "DocumentReference/cr"}], ["Observation.hasMember"]),
], ids=["any-target-slice", "any-target-slice-max"])
def test_a_reference_slice_without_target_profile_takes_any_target_type(validator: ProfileValidator, members: list,
                                                                        expected: list[str]) -> None:
    observation = {"resourceType": "Observation", "text": NARRATIVE, "status": "final", "code": {"text": "bilan"},
                   "hasMember": members}
    assert expressions(validator, observation, "membres") == expected


# -- value, pattern and type discriminators; open and closed slicing ------------------------------------
VITAL_SIGNS = {"coding": [{"system": CATEGORY, "code": "vital-signs", "display": "Vital Signs"}], "text": "Signes"}


def a_follow_up(**changes: object) -> dict:
    observation = {"resourceType": "Observation", "text": NARRATIVE, "status": "final", "code": {"text": "suivi"},
                   "category": [copy.deepcopy(VITAL_SIGNS)],
                   "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "OBS-1"},
                                  {"system": "https://autre.example", "value": "X"}],
                   "effectiveDateTime": "2026-11-20T10:00:00+01:00"}
    observation.update(changes)
    return observation


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, []),
    # pattern: extra codings and text still match; the slicing is closed to other categories
    ({"category": [VITAL_SIGNS, {"coding": [{"system": CATEGORY, "code": "laboratory"}]}]},
     [("Observation.category[1]", "matches none of the slices")]),
    ({"category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}]},
     [("Observation.category[0]", "matches none of the slices"),
      ("Observation.category", "slice 'signes' of Observation.category (profile suivi): at least 1 required")]),
    # value: the item with the fixed system belongs to the slice and gets its rules; the open slicing lets others in
    ({"identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2"}]},
     [("Observation.identifier[0].value", "Observation.identifier:local.value (profile suivi): at least 1")]),
    ({"identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "A"},
                     {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "B"}]},
     [("Observation.identifier", "slice 'local' of Observation.identifier (profile suivi): at most 1 allowed")]),
    # type: a closed type slicing keeps only dateTime
    ({"effectiveDateTime": None, "effectivePeriod": {"start": "2026-11-20"}},
     [("Observation.effectivePeriod", "matches none of the slices")]),
], ids=["valid", "pattern-closed-extra", "pattern-missing", "value-slice-rules", "value-slice-max", "type-closed"])
def test_value_pattern_and_type_discriminators(validator: ProfileValidator, changes: dict,
                                               expected: list[tuple[str, str]]) -> None:
    observation = {k: v for k, v in a_follow_up(**changes).items() if v is not None}
    found = errors(validator, observation, "suivi")
    assert [e for e, _ in found] == [e for e, _ in expected], found
    assert all(text in diagnostics for (_, diagnostics), (_, text) in zip(found, expected, strict=True))


# -- slices brought by a type profile (snapshot merges them instead of adding a second copy) ------------
def a_patient_with_commune(*extensions: dict) -> dict:
    return {"resourceType": "Patient", "text": NARRATIVE,
            "address": [{"city": "Rennes", "extension": list(extensions)}]}


def test_a_slice_required_on_a_type_profile_slice_is_checked_once(validator: ProfileValidator) -> None:
    commune = {"url": EX + "commune", "valueString": "35238"}
    assert errors(validator, a_patient_with_commune(commune), "patient-commune") == []
    assert errors(validator, a_patient_with_commune(), "patient-commune") == [
        ("Patient.address[0].extension",
         "slice 'commune' of Patient.address.extension (profile patient-commune): at least 1 required, 0 found")]
    assert expressions(validator, a_patient_with_commune(commune, commune), "patient-commune") == [
        "Patient.address[0].extension"]
    assert expressions(validator, a_patient_with_commune({"url": EX + "commune"}), "patient-commune") == [
        "Patient.address[0].extension[0]", "Patient.address[0].extension[0].value"]     # ext-1, then value[x] 1..1
