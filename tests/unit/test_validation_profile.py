"""Profile validation against differential-only test profiles (written here the way our French
profiles are written): cardinality, fixed and pattern values, slicing with every discriminator
type and slicing rule, extensions, bindings, reference targets and profile invariants."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal

import pytest

from fhir_server.definitions import Definitions, load_definitions
from fhir_server.terminology import Terminology
from fhir_server.validation import ProfileValidator

CORE = "http://hl7.org/fhir/StructureDefinition/"
EX = "https://espace.example/fhir/"
INS = "urn:oid:1.2.250.1.213.1.4.8"
FINESS = "https://finess.esante.gouv.fr"
MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def profile(name: str, type_: str, elements: list[dict], base: str | None = None, kind: str = "resource") -> dict:
    return {
        "resourceType": "StructureDefinition", "url": EX + "StructureDefinition/" + name, "name": name,
        "title": name, "status": "active", "kind": kind, "abstract": False, "type": type_,
        "derivation": "constraint", "baseDefinition": base or CORE + type_,
        "differential": {"element": elements},
    }


LEVELS = {
    "resourceType": "CodeSystem", "url": EX + "CodeSystem/niveau", "status": "active", "content": "complete",
    "concept": [{"code": "A", "display": "Autonome", "concept": [{"code": "A1"}, {"code": "A2"}]},
                {"code": "D", "display": "Dépendant"}],
}
AUTONOMOUS = {
    "resourceType": "ValueSet", "url": EX + "ValueSet/autonome", "status": "active",
    "compose": {"include": [{"system": EX + "CodeSystem/niveau",
                             "filter": [{"property": "concept", "op": "is-a", "value": "A"}]}]},
}
PRESSURE_UNITS = {
    "resourceType": "ValueSet", "url": EX + "ValueSet/unites-pression", "status": "active",
    "compose": {"include": [{"system": UCUM, "concept": [{"code": "mm[Hg]"}, {"code": "kPa"}]}]},
}
COUNTRIES = {
    "resourceType": "ValueSet", "url": EX + "ValueSet/pays", "status": "active",
    "compose": {"include": [{"system": "urn:iso:std:iso:3166", "concept": [{"code": "FRA"}, {"code": "BEL"}]}]},
}
MARITAL_STATUSES = {
    "resourceType": "ValueSet", "url": EX + "ValueSet/situation", "status": "active",
    "compose": {"include": [{"system": MARITAL, "concept": [{"code": "M"}, {"code": "S"}, {"code": "D"}]}]},
}

NIVEAU = profile("niveau", "Extension", kind="complex-type", elements=[
    {"id": "Extension", "path": "Extension", "max": "1"},
    {"id": "Extension.extension", "path": "Extension.extension", "max": "0"},
    {"id": "Extension.url", "path": "Extension.url", "fixedUri": EX + "StructureDefinition/niveau"},
    {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1, "type": [{"code": "Coding"}],
     "binding": {"strength": "required", "valueSet": EX + "ValueSet/autonome"}},
])

ORGANISATION = profile("organisation", "Organization", [
    {"id": "Organization.identifier", "path": "Organization.identifier", "min": 1,
     "slicing": {"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}},
    {"id": "Organization.identifier:finess", "path": "Organization.identifier", "sliceName": "finess",
     "min": 1, "max": "1"},
    {"id": "Organization.identifier:finess.system", "path": "Organization.identifier.system", "min": 1,
     "fixedUri": FINESS},
])

PATIENT = profile("patient", "Patient", [
    {"id": "Patient", "path": "Patient",
     "constraint": [{"key": "esp-1", "severity": "warning", "human": "La situation familiale vient de la liste",
                     "expression": "maritalStatus.exists() implies "
                                   f"maritalStatus.memberOf('{EX}ValueSet/situation')"}]},
    {"id": "Patient.extension:niveau", "path": "Patient.extension", "sliceName": "niveau", "max": "1",
     "type": [{"code": "Extension", "profile": [EX + "StructureDefinition/niveau"]}]},
    {"id": "Patient.identifier", "path": "Patient.identifier", "min": 1,
     "slicing": {"discriminator": [{"type": "pattern", "path": "system"}], "rules": "open"}},
    {"id": "Patient.identifier:INS", "path": "Patient.identifier", "sliceName": "INS", "min": 1, "max": "1"},
    {"id": "Patient.identifier:INS.system", "path": "Patient.identifier.system", "min": 1, "patternUri": INS},
    {"id": "Patient.identifier:INS.value", "path": "Patient.identifier.value", "min": 1},
    {"id": "Patient.name", "path": "Patient.name", "mustSupport": True},
    {"id": "Patient.telecom", "path": "Patient.telecom",
     "slicing": {"discriminator": [{"type": "value", "path": "system"}], "rules": "closed"}},
    {"id": "Patient.telecom:phone", "path": "Patient.telecom", "sliceName": "phone"},
    {"id": "Patient.telecom:phone.system", "path": "Patient.telecom.system", "min": 1, "fixedCode": "phone"},
    {"id": "Patient.telecom:email", "path": "Patient.telecom", "sliceName": "email", "max": "1"},
    {"id": "Patient.telecom:email.system", "path": "Patient.telecom.system", "min": 1, "fixedCode": "email"},
    {"id": "Patient.gender", "path": "Patient.gender", "min": 1, "fixedCode": "female"},
    {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1},
    {"id": "Patient.address.country", "path": "Patient.address.country",
     "binding": {"strength": "extensible", "valueSet": EX + "ValueSet/pays"}},
    {"id": "Patient.maritalStatus", "path": "Patient.maritalStatus",
     "binding": {"strength": "required", "valueSet": EX + "ValueSet/situation"}},
    {"id": "Patient.contact.relationship", "path": "Patient.contact.relationship",
     "patternCodeableConcept": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}},
    {"id": "Patient.generalPractitioner", "path": "Patient.generalPractitioner",
     "type": [{"code": "Reference", "targetProfile": [CORE + "Practitioner"]}]},
    {"id": "Patient.managingOrganization", "path": "Patient.managingOrganization",
     "type": [{"code": "Reference", "targetProfile": [EX + "StructureDefinition/organisation"]}]},
])

# Blood pressure: components sliced by code pattern (closed, ordered), value restricted to Quantity
TENSION = profile("tension", "Observation", [
    {"id": "Observation.code", "path": "Observation.code",
     "patternCodeableConcept": {"coding": [{"system": LOINC, "code": "85354-9"}]}},
    {"id": "Observation.subject", "path": "Observation.subject", "min": 1,
     "type": [{"code": "Reference", "targetProfile": [EX + "StructureDefinition/patient"]}]},
    {"id": "Observation.value[x]", "path": "Observation.value[x]", "max": "0"},
    {"id": "Observation.component", "path": "Observation.component", "min": 2,
     "slicing": {"discriminator": [{"type": "pattern", "path": "code"}], "ordered": True, "rules": "closed"}},
    {"id": "Observation.component.value[x]", "path": "Observation.component.value[x]",
     "type": [{"code": "Quantity"}], "binding": {"strength": "required", "valueSet": EX + "ValueSet/unites-pression"}},
    {"id": "Observation.component:systolique", "path": "Observation.component", "sliceName": "systolique",
     "min": 1, "max": "1"},
    {"id": "Observation.component:systolique.code", "path": "Observation.component.code",
     "patternCodeableConcept": {"coding": [{"system": LOINC, "code": "8480-6"}]}},
    {"id": "Observation.component:systolique.valueQuantity.system",
     "path": "Observation.component.valueQuantity.system", "min": 1, "fixedUri": UCUM},
    {"id": "Observation.component:diastolique", "path": "Observation.component", "sliceName": "diastolique",
     "min": 1, "max": "1"},
    {"id": "Observation.component:diastolique.code", "path": "Observation.component.code",
     "patternCodeableConcept": {"coding": [{"system": LOINC, "code": "8462-4"}]}},
])

# Notes (Observation.note) sliced by `exists` on authorString, and derivedFrom by target type
SUIVI = profile("suivi", "Observation", [
    {"id": "Observation.note", "path": "Observation.note",
     "slicing": {"discriminator": [{"type": "exists", "path": "author"}], "rules": "openAtEnd"}},
    {"id": "Observation.note:signee", "path": "Observation.note", "sliceName": "signee", "max": "1"},
    {"id": "Observation.note:signee.author[x]", "path": "Observation.note.author[x]", "min": 1},
    {"id": "Observation.derivedFrom", "path": "Observation.derivedFrom",
     "slicing": {"discriminator": [{"type": "type", "path": "resolve()"}], "rules": "closed"}},
    {"id": "Observation.derivedFrom:document", "path": "Observation.derivedFrom", "sliceName": "document",
     "max": "1", "type": [{"code": "Reference", "targetProfile": [CORE + "DocumentReference"]}]},
    {"id": "Observation.derivedFrom:mesure", "path": "Observation.derivedFrom", "sliceName": "mesure",
     "type": [{"code": "Reference", "targetProfile": [CORE + "Observation"]}]},
])

# A document bundle whose entries are sliced by profile
DOCUMENT = profile("document", "Bundle", [
    {"id": "Bundle.type", "path": "Bundle.type", "fixedCode": "document"},
    {"id": "Bundle.entry", "path": "Bundle.entry", "slicing": {
        "discriminator": [{"type": "profile", "path": "resource"}], "rules": "open"}},
    {"id": "Bundle.entry:patient", "path": "Bundle.entry", "sliceName": "patient", "min": 1, "max": "1"},
    {"id": "Bundle.entry:patient.resource", "path": "Bundle.entry.resource", "min": 1,
     "type": [{"code": "Patient", "profile": [EX + "StructureDefinition/patient"]}]},
])

TEST_RESOURCES = [LEVELS, AUTONOMOUS, MARITAL_STATUSES, PRESSURE_UNITS, COUNTRIES,
                  NIVEAU, ORGANISATION, PATIENT, TENSION, SUIVI, DOCUMENT]

NARRATIVE = {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Exemple</div>"}
GOOD_ORGANISATION = {"resourceType": "Organization", "id": "chu", "text": NARRATIVE, "name": "CHU",
                     "identifier": [{"system": FINESS, "value": "350000139"}]}
STORE = {
    "Organization/chu": GOOD_ORGANISATION,
    "Organization/sans-finess": {"resourceType": "Organization", "id": "sans-finess", "text": NARRATIVE,
                                 "name": "Cabinet"},
    "DocumentReference/cr": {"resourceType": "DocumentReference", "id": "cr", "status": "current",
                             "content": [{"attachment": {"url": "http://x/cr.pdf"}}]},
    "Observation/poids": {"resourceType": "Observation", "id": "poids", "status": "final", "code": {"text": "poids"}},
}


def fhir(value: object) -> object:
    """As the server sees a resource: a fresh copy with Decimal numbers."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: fhir(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fhir(v) for v in value]
    return value


@pytest.fixture(scope="module")
def resolved() -> list[str]:
    return []


@pytest.fixture(scope="module")
def validator(resolved: list[str]) -> ProfileValidator:
    core = load_definitions()
    definitions = Definitions(structures=dict(core.structures), value_sets=dict(core.value_sets),
                              code_systems=dict(core.code_systems))
    for resource in TEST_RESOURCES:
        definitions.add(copy.deepcopy(resource))

    def resolver(reference: str) -> dict | None:
        resolved.append(reference)
        found = STORE.get(reference)
        return fhir(found) if found else None

    return ProfileValidator(definitions, Terminology(definitions), resolver)


def issues_of(validator: ProfileValidator, resource: dict, profiles: list[str] | None = None) -> list[tuple]:
    return [(i.severity, i.code, i.expression[0] if i.expression else "")
            for i in validator.validate(fhir(resource), profiles)]


# -- Patient ---------------------------------------------------------------------------------------
def a_patient() -> dict:
    return {
        "resourceType": "Patient", "id": "p1", "meta": {"profile": [EX + "StructureDefinition/patient"]},
        "text": NARRATIVE,
        "extension": [{"url": EX + "StructureDefinition/niveau",
                       "valueCoding": {"system": EX + "CodeSystem/niveau", "code": "A1"}}],
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810003456786"},
                       {"system": INS, "value": "284037512345640"}],
        "telecom": [{"system": "phone", "value": "+33 6 12 34 56 78"}, {"system": "email", "value": "e@x.fr"}],
        "gender": "female", "birthDate": "1984-03-17",
        "maritalStatus": {"coding": [{"system": MARITAL, "code": "M"}]},
        "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131",
                                                   "code": "N", "display": "Next-of-Kin"}], "text": "Mère"}],
                     "name": {"family": "Lefèvre"}}],
        "generalPractitioner": [{"reference": "Practitioner/dr"}],
        "managingOrganization": {"reference": "Organization/chu"},
    }


def change(mutate: Callable[[dict], object]) -> dict:
    patient = a_patient()
    mutate(patient)
    return patient


PATIENT_CASES = [
    ("valid", lambda p: None, []),
    ("must-support element may be absent", lambda p: p.pop("contact"), []),
    ("INS slice missing", lambda p: p["identifier"].pop(1),
     [("error", "required", "Patient.identifier")]),
    ("no identifier at all", lambda p: p.pop("identifier"),
     [("error", "required", "Patient.identifier"), ("error", "required", "Patient.identifier")]),
    ("INS without value", lambda p: p["identifier"][1].pop("value"),
     [("error", "required", "Patient.identifier[1].value")]),
    ("two INS", lambda p: p["identifier"].append({"system": INS, "value": "1"}),
     [("error", "structure", "Patient.identifier")]),
    ("fixed gender", lambda p: p.update(gender="male"),
     [("error", "value", "Patient.gender")]),
    ("required birthDate", lambda p: p.pop("birthDate"),
     [("error", "required", "Patient.birthDate")]),
    ("birthDate given only as an extension counts",
     lambda p: p.update(_birthDate=p.pop("birthDate") and {"extension": [
         {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}), []),
    ("required binding", lambda p: p["maritalStatus"]["coding"][0].update(code="W"),
     [("warning", "invariant", "Patient"), ("error", "code-invalid", "Patient.maritalStatus")]),
    ("closed slicing", lambda p: p["telecom"].append({"system": "fax", "value": "02 99 00 00 00"}),
     [("error", "structure", "Patient.telecom[2]")]),
    ("slice maximum", lambda p: p["telecom"].append({"system": "email", "value": "f@x.fr"}),
     [("error", "structure", "Patient.telecom")]),
    ("extensible binding on a string", lambda p: p.update(address=[{"city": "Rennes", "country": "France"}]),
     [("warning", "code-invalid", "Patient.address[0].country")]),
    ("extensible binding met", lambda p: p.update(address=[{"city": "Rennes", "country": "FRA"}]), []),
    ("pattern: extra codings and text are fine", lambda p: p["contact"][0]["relationship"][0]["coding"].insert(
        0, {"system": "http://example.org/x", "code": "y"}), []),
    ("pattern mismatch", lambda p: p["contact"][0]["relationship"][0]["coding"][0].update(code="C"),
     [("error", "value", "Patient.contact[0].relationship[0]")]),
    ("extension value outside its value set", lambda p: p["extension"][0]["valueCoding"].update(code="D"),
     [("error", "code-invalid", "Patient.extension[0].valueCoding")]),
    ("extension value of the wrong type",
     lambda p: p["extension"][0].update(valueString=p["extension"][0].pop("valueCoding") and "A"),
     [("error", "structure", "Patient.extension[0].valueString")]),
    ("extension slice maximum", lambda p: p["extension"].append(copy.deepcopy(p["extension"][0])),
     [("error", "structure", "Patient.extension")]),
    ("unknown extension", lambda p: p["extension"].append({"url": EX + "inconnue", "valueString": "x"}),
     [("warning", "extension", "Patient.extension[1]")]),
    ("unknown modifier extension",
     lambda p: p.update(modifierExtension=[{"url": EX + "inconnue", "valueBoolean": True}]),
     [("error", "extension", "Patient.modifierExtension[0]")]),
    ("core extension checked by its definition",
     lambda p: p["extension"].append({"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                      "valueString": "10:30"}),
     [("error", "structure", "Patient.extension[1].valueString")]),
    ("reference to a type the profile excludes", lambda p: p["generalPractitioner"].append(
        {"reference": "Organization/chu"}), [("error", "structure", "Patient.generalPractitioner[1]")]),
    ("target that does not conform to the target profile",
     lambda p: p.update(managingOrganization={"reference": "Organization/sans-finess"}),
     [("error", "structure", "Patient.managingOrganization")]),
    ("unresolvable target: not an error", lambda p: p.update(managingOrganization={"reference": "Organization/x"}),
     []),
    ("conforming contained target", lambda p: p.update(
        contained=[dict(GOOD_ORGANISATION, id="org")], managingOrganization={"reference": "#org"}), []),
    ("non-conforming contained target", lambda p: p.update(
        contained=[{"resourceType": "Organization", "id": "org", "name": "Cabinet"}],
        managingOrganization={"reference": "#org"}),
     [("error", "structure", "Patient.managingOrganization"), ("warning", "invariant", "Patient.contained[0]")]),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in PATIENT_CASES], ids=[c[0] for c in PATIENT_CASES])
def test_patient_profile(validator: ProfileValidator, mutate: Callable, expected: list[tuple]) -> None:
    assert issues_of(validator, change(mutate)) == expected


def test_diagnostics_name_the_slice_the_profile_and_the_values(validator: ProfileValidator) -> None:
    def diagnostics(mutate: Callable) -> list[str]:
        return [i.diagnostics for i in validator.validate(fhir(change(mutate)))]

    assert diagnostics(lambda p: p["identifier"].pop(1)) == [
        "slice 'INS' of Patient.identifier (profile patient): at least 1 required, 0 found"]
    assert diagnostics(lambda p: p["identifier"][1].pop("value")) == [
        "Patient.identifier:INS.value (profile patient): at least 1 required, 0 found"]
    assert diagnostics(lambda p: p.update(gender="male")) == [
        "Patient.gender: value 'male' is not the fixed value 'female' required by patient"]
    assert diagnostics(lambda p: p["telecom"].append({"system": "fax", "value": "1"})) == [
        "Patient.telecom[2] matches none of the slices of Patient.telecom ('phone', 'email') and the slicing is "
        "closed (profile patient)"]
    assert diagnostics(lambda p: p["maritalStatus"]["coding"][0].update(code="W")) == [
        "Constraint esp-1 failed: La situation familiale vient de la liste",
        f"Patient.maritalStatus: {MARITAL}|W is not in the value set {EX}ValueSet/situation required here"]
    assert diagnostics(lambda p: p.update(managingOrganization={"reference": "Organization/sans-finess"})) == [
        "Patient.managingOrganization: the referenced Organization (Organization/sans-finess) does not conform to "
        f"{EX}StructureDefinition/organisation"]


def test_store_lookups_go_through_the_resolver_once(validator: ProfileValidator, resolved: list[str]) -> None:
    resolved.clear()
    patient = change(lambda p: p.update(generalPractitioner=[{"reference": "Practitioner/dr"}]))
    validator.validate(fhir(patient))
    assert resolved == ["Organization/chu"]     # only a target with a specific profile is fetched


def test_profiles_can_be_requested_explicitly(validator: ProfileValidator) -> None:
    patient = change(lambda p: p.pop("meta"))
    assert issues_of(validator, change(lambda p: (p.pop("meta"), p.update(gender="male")))) == []  # base only
    assert issues_of(validator, dict(patient, gender="male"), [EX + "StructureDefinition/patient"]) == [
        ("error", "value", "Patient.gender")]
    assert issues_of(validator, patient, [EX + "StructureDefinition/absent"]) == [
        ("error", "not-supported", "Patient")]
    assert issues_of(validator, patient, [EX + "StructureDefinition/tension"]) == [("error", "invalid", "Patient")]


def test_unknown_declared_profile_is_a_warning_and_the_base_is_checked(validator: ProfileValidator) -> None:
    patient = change(lambda p: p.update(meta={"profile": [EX + "StructureDefinition/absent"]}, gender="nobody"))
    assert issues_of(validator, patient) == [
        ("warning", "not-supported", "Patient.meta.profile[0]"),
        ("error", "code-invalid", "Patient.gender"),
    ]


# -- Observation: ordered closed slicing by pattern, value restrictions ------------------------------
def a_blood_pressure() -> dict:
    def component(code: str, value: float) -> dict:
        return {"code": {"coding": [{"system": LOINC, "code": code}]},
                "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}}

    return {
        "resourceType": "Observation", "meta": {"profile": [EX + "StructureDefinition/tension"]},
        "text": NARRATIVE, "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
        "subject": {"reference": "Patient/p1"},
        "component": [component("8480-6", 120.5), component("8462-4", 80)],
    }


def change_bp(mutate: Callable[[dict], object]) -> dict:
    observation = a_blood_pressure()
    mutate(observation)
    return observation


BLOOD_PRESSURE_CASES = [
    ("valid", lambda o: None, []),
    ("code pattern", lambda o: o["code"]["coding"][0].update(code="29463-7"),
     [("error", "value", "Observation.code")]),
    ("value not allowed", lambda o: o.update(valueString="120/80"),
     [("error", "structure", "Observation.valueString")]),
    ("component missing", lambda o: o["component"].pop(1),
     [("error", "required", "Observation.component"), ("error", "required", "Observation.component")]),
    ("components out of order", lambda o: o["component"].reverse(),
     [("error", "structure", "Observation.component[1]")]),
    ("unknown component in closed slicing",
     lambda o: o["component"].append({"code": {"text": "pouls"}, "valueQuantity": {"value": 60}}),
     [("error", "structure", "Observation.component[2]")]),
    ("type restricted in a component", lambda o: o["component"][1].update(
        valueString=o["component"][1].pop("valueQuantity") and "80"),
     [("error", "structure", "Observation.component[1].valueString")]),
    ("required binding on a Quantity unit", lambda o: o["component"][1]["valueQuantity"].update(code="cm[H2O]"),
     [("error", "code-invalid", "Observation.component[1].valueQuantity")]),
    ("fixed system inside a slice", lambda o: o["component"][0]["valueQuantity"].update(system="http://x"),
     [("error", "code-invalid", "Observation.component[0].valueQuantity"),      # UCUM mm[Hg] no more
      ("error", "value", "Observation.component[0].valueQuantity.system")]),
    ("subject of the wrong type", lambda o: o.update(subject={"reference": "Group/g"}),
     [("error", "structure", "Observation.subject")]),
    ("subject required", lambda o: o.pop("subject"), [("error", "required", "Observation.subject")]),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in BLOOD_PRESSURE_CASES],
                         ids=[c[0] for c in BLOOD_PRESSURE_CASES])
def test_blood_pressure_profile(validator: ProfileValidator, mutate: Callable, expected: list[tuple]) -> None:
    assert issues_of(validator, change_bp(mutate)) == expected


# -- exists and type discriminators, open at end --------------------------------------------------------
def a_follow_up(notes: list[dict], derived_from: list[dict]) -> dict:
    return {"resourceType": "Observation", "meta": {"profile": [EX + "StructureDefinition/suivi"]},
            "text": NARRATIVE, "status": "final", "code": {"text": "suivi"},
            "note": notes, "derivedFrom": derived_from}


SIGNED, UNSIGNED = {"authorString": "Dr B.", "text": "vu"}, {"text": "à revoir"}
FOLLOW_UP_CASES = [
    ("signed note first, then others", [SIGNED, UNSIGNED, UNSIGNED], [], []),
    ("two signed notes", [SIGNED, SIGNED], [], [("error", "structure", "Observation.note")]),
    ("open at end: a slice after other notes", [UNSIGNED, SIGNED], [],
     [("error", "structure", "Observation.note[1]")]),
    ("targets sliced by their type", [], [{"reference": "DocumentReference/cr"}, {"reference": "Observation/poids"},
                                          {"reference": "Observation/autre"}], []),
    ("type read from the reference when unresolved", [], [{"reference": "Observation/inconnue"}], []),
    ("target type outside the closed slicing", [], [{"reference": "Media/m"}],
     [("error", "structure", "Observation.derivedFrom[0]")]),
    ("slice maximum by type", [], [{"reference": "DocumentReference/cr"}, {"reference": "DocumentReference/cr2"}],
     [("error", "structure", "Observation.derivedFrom")]),
]


@pytest.mark.parametrize(("notes", "derived_from", "expected"), [c[1:] for c in FOLLOW_UP_CASES],
                         ids=[c[0] for c in FOLLOW_UP_CASES])
def test_exists_and_type_discriminators(validator: ProfileValidator, notes: list, derived_from: list,
                                        expected: list[tuple]) -> None:
    observation = a_follow_up(notes, derived_from)
    if not notes:
        observation.pop("note")
    if not derived_from:
        observation.pop("derivedFrom")
    assert issues_of(validator, observation) == expected


# -- profile discriminator and bundle-local references ---------------------------------------------------
def a_document(patient: dict) -> dict:
    composition, patient_url, observation = (f"urn:uuid:5a2c1e0a-3c4d-4e1f-9a7b-0d1e2f3a4b5{i}" for i in range(3))
    return {
        "resourceType": "Bundle", "meta": {"profile": [EX + "StructureDefinition/document"]},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"},
        "type": "document", "timestamp": "2026-11-20T14:05:00+01:00",
        "entry": [
            {"fullUrl": composition,
             "resource": {"resourceType": "Composition", "text": NARRATIVE, "status": "final",
                          "type": {"coding": [{"system": LOINC, "code": "11488-4"}]},
                          "subject": {"reference": patient_url},
                          "date": "2026-11-20T14:05:00+01:00", "author": [{"reference": "Practitioner/dr"}],
                          "title": "Compte rendu", "section": [{"title": "Tension", "text": NARRATIVE,
                                                                "entry": [{"reference": observation}]}]}},
            {"fullUrl": patient_url, "resource": patient},
            {"fullUrl": observation, "resource": dict(a_blood_pressure(), subject={"reference": patient_url})},
        ],
    }


def test_document_with_conforming_patient(validator: ProfileValidator) -> None:
    assert issues_of(validator, a_document(a_patient())) == []


def test_profile_discriminator_and_bundle_local_target_profile(validator: ProfileValidator) -> None:
    male = dict(a_patient(), gender="male")
    assert issues_of(validator, a_document(male)) == [
        ("error", "value", "Bundle.entry[1].resource.gender"),       # the patient's own meta.profile
        ("error", "structure", "Bundle.entry[2].resource.subject"),  # the blood pressure's target profile
        ("error", "required", "Bundle.entry"),                       # no entry conforms to the patient profile
    ]


# -- invariants with user functions ----------------------------------------------------------------------
def test_member_of_in_a_profile_invariant(validator: ProfileValidator) -> None:
    bachelor = change(lambda p: p["maritalStatus"]["coding"][0].update(code="S"))
    assert issues_of(validator, bachelor) == []
    unknown_system = change(lambda p: p["maritalStatus"]["coding"][0].update(system="http://example.org/cs"))
    assert ("warning", "invariant", "Patient") in issues_of(validator, unknown_system)


def test_conforms_to_in_an_invariant(validator: ProfileValidator) -> None:
    # conformsTo() runs this validator on the resolved target; unknown targets are not failures
    observation = change_bp(lambda o: o.update(subject={"reference": "Patient/absent"}))
    check = copy.deepcopy(TENSION)
    check["url"] = EX + "StructureDefinition/tension-conforme"
    check["differential"]["element"].insert(0, {"id": "Observation", "path": "Observation", "constraint": [
        {"key": "esp-2", "severity": "error", "human": "Le patient suit le profil patient",
         "expression": f"subject.resolve().all(conformsTo('{EX}StructureDefinition/patient'))"}]})
    validator.definitions.add(check)
    url = [EX + "StructureDefinition/tension-conforme"]
    assert issues_of(validator, observation, url) == []
    contained = change_bp(lambda o: o.update(contained=[{"resourceType": "Patient", "id": "p", "gender": "male"}],
                                             subject={"reference": "#p"}))
    assert ("error", "invariant", "Observation") in issues_of(validator, contained, url)


# -- compiled plans are reused, and forgotten when definitions change -----------------------------------
def test_plans_and_invariants_are_compiled_once(validator: ProfileValidator) -> None:
    validator.validate(fhir(a_patient()))
    plan = validator.plans.get(EX + "StructureDefinition/patient")
    validator.validate(fhir(a_patient()))
    assert validator.plans.get(EX + "StructureDefinition/patient") is plan
    assert validator.plans.get(EX + "StructureDefinition/patient|1.0") is plan
    assert validator.invariants.notes == {}


def test_plans_can_be_prepared_at_start(validator: ProfileValidator) -> None:
    broken = profile("cassé", "Patient", [{"id": "Patient.gender", "path": "Patient.gender", "max": "*"}])
    validator.definitions.add(broken)
    assert validator.prepare([EX + "StructureDefinition/patient", CORE + "Observation", broken["url"],
                              EX + "StructureDefinition/absent"]) == {
        broken["url"]: f"Cannot generate the snapshot of {broken['url']}: Patient.gender: max * is more than "
                       "the base maximum 1",
        EX + "StructureDefinition/absent": "unknown StructureDefinition",
    }
    declaring = change(lambda p: p.update(meta={"profile": [broken["url"]]}))
    assert issues_of(validator, declaring)[0] == ("warning", "processing", "Patient.meta.profile[0]")


def test_changed_definitions_are_picked_up_after_invalidate() -> None:
    core = load_definitions()
    definitions = Definitions(structures=dict(core.structures), value_sets=dict(core.value_sets),
                              code_systems=dict(core.code_systems))
    for resource in TEST_RESOURCES:
        definitions.add(copy.deepcopy(resource))
    validator = ProfileValidator(definitions, Terminology(definitions))
    widowed = change(lambda p: (p.pop("extension"), p["maritalStatus"]["coding"][0].update(code="W"),
                                p.pop("managingOrganization")))
    assert ("error", "code-invalid", "Patient.maritalStatus") in issues_of(validator, widowed)
    more_statuses = copy.deepcopy(MARITAL_STATUSES)
    more_statuses["compose"]["include"][0]["concept"].append({"code": "W"})
    definitions.add(more_statuses)
    validator.invalidate()
    assert issues_of(validator, widowed) == []


# -- broken input: the structure validator reports it; this validator must not fail on it ----------------
BROKEN = [
    ("meta.profile not a list", lambda p: p.update(meta={"profile": EX + "StructureDefinition/patient"})),
    ("coding not a list", lambda p: p["maritalStatus"].update(coding={"system": MARITAL, "code": "M"})),
    ("system not a string", lambda p: p["maritalStatus"]["coding"][0].update(system=["x"])),
    ("contained not a list", lambda p: p.update(contained=3, managingOrganization={"reference": "#org"})),
    ("contained without a valid type", lambda p: p.update(contained=[{"resourceType": ["Organization"]}])),
    ("reference not a string", lambda p: p.update(managingOrganization={"reference": ["Organization/chu"]})),
    ("extension url not a string", lambda p: p["extension"].append({"url": 12, "valueString": "x"})),
    ("identifier entries of the wrong kind", lambda p: p.update(identifier=[None, "INS", 3, [], {}])),
    ("null everywhere", lambda p: p.update(gender=None, name=None, telecom=[None], contact=None)),
]


@pytest.mark.parametrize("mutate", [c[1] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_input_does_not_break_the_validator(validator: ProfileValidator, mutate: Callable) -> None:
    issues = validator.validate(fhir(change(mutate)))
    assert all(issue.severity in ("error", "warning", "information") for issue in issues)
