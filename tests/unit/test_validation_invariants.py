"""FHIRPath invariants of the base definitions (dom-*, ele-1, ext-1, ref-1, txt-*, and type-specific
ones such as pat-1, obs-6, obs-7), the user functions we supply to fhirpathpy, and the native twins
of the universal invariants."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from fhir_server.definitions import Definitions, load_definitions
from fhir_server.terminology import Terminology
from fhir_server.validation import ProfileValidator
from fhir_server.validation.invariants import NATIVE_INVARIANTS, prepare
from fhir_server.validation.xhtml import narrative_is_safe

XHTML = "http://www.w3.org/1999/xhtml"
TEXT = {"status": "generated", "div": f"<div xmlns=\"{XHTML}\">Exemple</div>"}
LOINC = "http://loinc.org"


@pytest.fixture(scope="module")
def validator() -> ProfileValidator:
    definitions = load_definitions()
    return ProfileValidator(definitions, Terminology(definitions))


def failed_invariants(validator: ProfileValidator, resource: dict) -> list[tuple[str, str, str]]:
    """(severity, constraint key, expression) of each invariant failure."""
    return [(i.severity, i.diagnostics.split()[1], i.expression[0])
            for i in validator.validate(resource) if i.code == "invariant"]


def patient(**elements: object) -> dict:
    return {"resourceType": "Patient", "text": TEXT, **elements}


def observation(**elements: object) -> dict:
    return {"resourceType": "Observation", "text": TEXT, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "85354-9"}]}, **elements}


ORGANISATION = {"resourceType": "Organization", "id": "org", "name": "CHU"}

CASES = [
    # dom-*: rules on contained resources and narrative
    ("dom-2 nested contained", patient(
        contained=[dict(ORGANISATION, contained=[dict(ORGANISATION, id="inner")])],
        managingOrganization={"reference": "#org"}),
     [("error", "dom-2", "Patient"), ("error", "dom-3", "Patient.contained[0]"),
      ("warning", "dom-6", "Patient.contained[0]"), ("warning", "dom-6", "Patient.contained[0].contained[0]")]),
    ("dom-3 contained but not referenced", patient(contained=[ORGANISATION]),
     [("error", "dom-3", "Patient"), ("warning", "dom-6", "Patient.contained[0]")]),
    ("dom-3 referenced from an extension canonical", patient(
        contained=[ORGANISATION],
        extension=[{"url": "http://hl7.org/fhir/StructureDefinition/patient-preferenceType",
                    "valueCoding": {"system": "#org", "code": "x"}}]),
     [("warning", "dom-6", "Patient.contained[0]")]),
    ("dom-3 contained refers to its container", patient(
        id="p", contained=[{"resourceType": "Provenance", "id": "prov", "text": TEXT,
                            "target": [{"reference": "#"}], "recorded": "2024-01-01T00:00:00Z",
                            "agent": [{"who": {"display": "Dr B."}}]}]),
     []),
    ("dom-4 contained with a version", patient(
        contained=[dict(ORGANISATION, meta={"versionId": "1"})], managingOrganization={"reference": "#org"}),
     [("error", "dom-4", "Patient"), ("warning", "dom-6", "Patient.contained[0]")]),
    ("dom-5 contained with a security label", patient(
        contained=[dict(ORGANISATION, meta={"security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]})],
        managingOrganization={"reference": "#org"}),
     [("error", "dom-5", "Patient"), ("warning", "dom-6", "Patient.contained[0]")]),
    ("dom-6 no narrative is a best-practice warning", {"resourceType": "Patient", "active": True},
     [("warning", "dom-6", "Patient")]),
    # elements and extensions
    ("ele-1 empty element", patient(name=[{}]), [("error", "ele-1", "Patient.name[0]")]),
    ("ele-1 only an id", patient(name=[{"id": "n1"}]), [("error", "ele-1", "Patient.name[0]")]),
    ("ext-1 extension with value and extensions", patient(extension=[
        {"url": "http://example.org/x", "valueString": "a", "extension": [{"url": "y", "valueString": "b"}]}]),
     [("error", "ext-1", "Patient.extension[0]")]),
    ("ref-1 local reference without contained resource", patient(managingOrganization={"reference": "#org"}),
     [("error", "ref-1", "Patient.managingOrganization")]),
    ("ref-1 satisfied", patient(contained=[ORGANISATION], managingOrganization={"reference": "#org"}),
     [("warning", "dom-6", "Patient.contained[0]")]),
    # narrative
    ("txt-1 script in narrative", patient(text={"status": "generated",
                                                "div": f"<div xmlns=\"{XHTML}\"><script>alert(1)</script>x</div>"}),
     [("error", "txt-1", "Patient.text.div"), ("error", "txt-2", "Patient.text.div")]),
    ("txt-2 blank narrative", patient(text={"status": "generated", "div": f"<div xmlns=\"{XHTML}\"> </div>"}),
     [("error", "txt-1", "Patient.text.div"), ("error", "txt-2", "Patient.text.div")]),
    # type-specific invariants
    ("pat-1 contact without details", patient(contact=[{"gender": "female"}]),
     [("error", "pat-1", "Patient.contact[0]")]),
    ("pat-1 contact with a name", patient(contact=[{"name": {"family": "Martin"}}]), []),
    ("obs-6 value and data absent reason", observation(
        valueQuantity={"value": Decimal("72.5"), "unit": "kg"},
        dataAbsentReason={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                      "code": "unknown"}]}),
     [("error", "obs-6", "Observation")]),
    ("obs-7 value and a component with the same code", observation(
        valueString="120/80", component=[{"code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
                                          "valueString": "x"}]),
     [("error", "obs-7", "Observation")]),
    ("obs-7 components with other codes", observation(
        component=[{"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                    "valueQuantity": {"value": 120}}]), []),
    ("obs-3 reference range needs low, high or text", observation(referenceRange=[{"type": {"text": "normal"}}]),
     [("error", "obs-3", "Observation.referenceRange[0]")]),
    ("per-1 period ending before it starts", patient(name=[{"family": "Martin", "period": {
        "start": "2020-01-01", "end": "2019-12-31"}}]), [("error", "per-1", "Patient.name[0].period")]),
    ("qty-3 unit code without system", observation(valueQuantity={"value": 1, "code": "mg"}),
     [("error", "qty-3", "Observation.valueQuantity")]),
    ("bdl-11 document must start with a Composition", {
        "resourceType": "Bundle", "type": "document", "timestamp": "2024-01-01T00:00:00Z",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"},
        "entry": [{"fullUrl": "urn:uuid:1", "resource": patient()}]},
     [("error", "bdl-11", "Bundle")]),
    ("bdl-7 duplicate fullUrl", {
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:1", "resource": patient()}, {"fullUrl": "urn:uuid:1", "resource": patient()}]},
     [("error", "bdl-7", "Bundle")]),
    ("que-1 group without items", {"resourceType": "Questionnaire", "text": TEXT, "status": "active",
                                   "item": [{"linkId": "1", "type": "group", "text": "Groupe"}]},
     [("error", "que-1", "Questionnaire.item[0]")]),
    ("tim-10 both when and timeOfDay", {
        "resourceType": "ServiceRequest", "text": TEXT, "status": "active", "intent": "order",
        "subject": {"reference": "Patient/p"},
        "occurrenceTiming": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d",
                                        "when": ["MORN"], "timeOfDay": ["08:00:00"]}}},
     [("error", "tim-10", "ServiceRequest.occurrenceTiming.repeat")]),
]


@pytest.mark.parametrize(("resource", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_base_invariants(validator: ProfileValidator, resource: dict, expected: list[tuple]) -> None:
    assert failed_invariants(validator, copy.deepcopy(resource)) == expected


def test_invariant_diagnostics(validator: ProfileValidator) -> None:
    issues = validator.validate(patient(contact=[{"gender": "female"}]))
    assert [i.to_fhir() for i in issues] == [{
        "severity": "error", "code": "invariant",
        "diagnostics": "Constraint pat-1 failed: SHALL at least contain a contact's details or a reference to an "
                       "organization",
        "expression": ["Patient.contact[0]"],
    }]


# -- the native twins agree with fhirpathpy -------------------------------------------------------------
TWIN_SAMPLES = {
    "ele-1": [({"family": "x"}, "HumanName"), ({}, "HumanName"), ({"id": "a"}, "HumanName"), ("text", "string"),
              ({"extension": [{"url": "u", "valueString": "v"}]}, "string"), ({"given": []}, "HumanName")],
    "ext-1": [({"url": "u", "valueString": "v"}, "Extension"), ({"url": "u"}, "Extension"),
              ({"url": "u", "extension": [{"url": "a", "valueCode": "b"}]}, "Extension"),
              ({"url": "u", "valueString": "v", "extension": [{"url": "a", "valueCode": "b"}]}, "Extension")],
    "dom-3": [(patient(), None), (patient(contained=[ORGANISATION]), None),
              (patient(contained=[ORGANISATION], managingOrganization={"reference": "#org"}), None),
              (patient(contained=[ORGANISATION, dict(ORGANISATION, id="other")],
                       managingOrganization={"reference": "#org"}), None),
              (patient(contained=[{"resourceType": "Provenance", "id": "p", "target": [{"reference": "#"}]}]), None)],
}


def expression_of(key: str) -> str:
    for expression in NATIVE_INVARIANTS:
        for sd in load_definitions().base_types.values():
            for element in sd["snapshot"]["element"]:
                for constraint in element.get("constraint", []):
                    if constraint["key"] == key and constraint.get("expression") == expression:
                        return expression
    raise AssertionError(f"{key} has no native twin")


@pytest.mark.parametrize("key", sorted(TWIN_SAMPLES))
def test_native_twins_agree_with_fhirpathpy(key: str) -> None:
    expression = expression_of(key)
    native = NATIVE_INVARIANTS[expression]
    hosted = {"hasValue": {"fn": lambda inputs: [len(inputs) == 1 and not isinstance(inputs[0], dict | list)],
                           "arity": {0: []}}}
    compiled = compile_fhirpath(prepare(expression), models["r4"], {"userInvocationTable": hosted})
    for data, type_name in TWIN_SAMPLES[key]:
        node = data if type_name is None else ResourceNode.create_node(data, type_name)
        assert compiled(node, {"resource": data, "rootResource": data}) == [native(data)], data


# -- what fhirpathpy is given --------------------------------------------------------------------------
@pytest.mark.parametrize(("expression", "prepared"), [
    ("a.trace('x').b", "a.b"),
    ("contained.where(x).trace('unmatched', id).empty()", "contained.where(x).empty()"),
    ("a.trace('it''s (odd)', (b | c)).exists()", "a.exists()"),
    ("%resource.descendants().as(canonical)", "%resource.descendants().ofType(canonical)"),
    ("value.as(Quantity).value > 0", "value.ofType(Quantity).value > 0"),
])
def test_expressions_are_prepared_for_fhirpathpy(expression: str, prepared: str) -> None:
    assert prepare(expression) == prepared


@pytest.mark.parametrize(("div", "safe"), [
    (f"<div xmlns=\"{XHTML}\"><p>Texte <b>gras</b>&nbsp;&amp; accents éàü</p></div>", True),
    (f"<div xmlns=\"{XHTML}\"><table><tr><td>1</td></tr></table><img src=\"#logo\" alt=\"\"/></div>", True),
    (f"<div xmlns=\"{XHTML}\"><img src=\"data:image/png;base64,AA==\"/></div>", True),     # an image is content
    (f"<div xmlns=\"{XHTML}\"><a href=\"https://esante.gouv.fr\">lien</a></div>", True),
    ("<div>sans espace de noms</div>", True),
    (f"<div xmlns=\"{XHTML}\"><script>alert(1)</script>x</div>", False),
    (f"<div xmlns=\"{XHTML}\"><p onclick=\"alert(1)\">x</p></div>", False),
    (f"<div xmlns=\"{XHTML}\"><a href=\" JavaScript:alert(1)\">x</a></div>", False),
    (f"<div xmlns=\"{XHTML}\"><iframe src=\"https://x\"/>x</div>", False),
    (f"<div xmlns=\"{XHTML}\"><form><input/></form>x</div>", False),
    (f"<div xmlns=\"{XHTML}\">  \n </div>", False),
    (f"<p xmlns=\"{XHTML}\">pas un div</p>", False),
    (f"<div xmlns=\"{XHTML}\"><p>non fermé</div>", False),
    ("texte brut", False),
    ("<div xmlns=\"http://example.org/other\">x</div>", False),
])
def test_narrative_checks(div: str, safe: bool) -> None:
    assert narrative_is_safe(div) is safe


# -- invariants we cannot evaluate are skipped, never errors --------------------------------------------
def test_unevaluable_invariants_are_skipped_with_a_note() -> None:
    core = load_definitions()
    definitions = Definitions(structures=dict(core.structures), value_sets=core.value_sets,
                              code_systems=core.code_systems)
    definitions.add({
        "resourceType": "StructureDefinition", "url": "https://espace.example/fhir/StructureDefinition/odd",
        "name": "Odd", "status": "active", "kind": "resource", "abstract": False, "type": "Patient",
        "derivation": "constraint", "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "differential": {"element": [{"id": "Patient", "path": "Patient", "constraint": [
            {"key": "odd-0", "severity": "error", "human": "unparsable", "expression": "name.@@@"},
            {"key": "odd-1", "severity": "error", "human": "broken", "expression": "name.where("},
            {"key": "odd-2", "severity": "error", "human": "unknown function", "expression": "name.frobnicate()"},
            {"key": "odd-3", "severity": "error", "human": "unknown variable", "expression": "%nowhere.exists()"},
            {"key": "odd-4", "severity": "error", "human": "unknown value set",
             "expression": "gender.memberOf('https://espace.example/fhir/ValueSet/absent')"},
        ]}]},
    })
    validator = ProfileValidator(definitions, Terminology(definitions))
    resource = patient(gender="female", meta={"profile": ["https://espace.example/fhir/StructureDefinition/odd"]})
    assert validator.validate(resource) == []
    assert sorted(note.split(":")[0] for note in validator.invariants.notes.values()) == [
        "cannot be compiled", "odd-1", "odd-2", "odd-3"]


def test_primitive_value_with_an_extension_is_not_misread(validator: ProfileValidator) -> None:
    # fhirpathpy reads `type` + `_type` as two items, which made bdl-3 fail on this valid batch
    batch = {"resourceType": "Bundle", "type": "batch",
             "_type": {"extension": [{"url": "http://example.org/fhir/StructureDefinition/note",
                                      "valueString": "lot de nuit"}]},
             "entry": [{"request": {"method": "GET", "url": "Patient?name=martin"}}]}
    assert failed_invariants(validator, batch) == []
    batch["entry"] = [{"fullUrl": "urn:uuid:1", "resource": patient()}]    # an entry without request:
    assert failed_invariants(validator, batch) == [("error", "bdl-3", "Bundle")]   # still judged


# -- %resource, %rootResource and resolve() ---------------------------------------------------------------
EX = "https://espace.example/fhir/StructureDefinition/"
NIR = "urn:oid:1.2.250.1.213.1.4.8"


def constrained(name: str, type_: str, path: str, key: str, expression: str) -> dict:
    """A profile adding one invariant at `path`."""
    return {"resourceType": "StructureDefinition", "url": EX + name, "name": name, "status": "active",
            "kind": "resource", "abstract": False, "type": type_, "derivation": "constraint",
            "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{type_}",
            "differential": {"element": [{"id": path, "path": path, "constraint": [
                {"key": key, "severity": "error", "human": key, "expression": expression}]}]}}


CONTACT_PHONE = constrained("contact-distinct", "Patient", "Patient.contact", "esp-contact-1",
                            "telecom.value.intersect(%resource.telecom.value).empty()")
PATIENT_WITH_GENDER = constrained("resultat-sexe", "Observation", "Observation", "esp-obs-1",
                                  "subject.resolve().gender.exists()")
STORED = {"Patient/avec-sexe": {"resourceType": "Patient", "id": "avec-sexe", "gender": "female"},
          "Patient/sans-sexe": {"resourceType": "Patient", "id": "sans-sexe"}}


@pytest.fixture(scope="module")
def resolving_validator() -> ProfileValidator:
    core = load_definitions()
    definitions = Definitions(structures=dict(core.structures), value_sets=core.value_sets,
                              code_systems=core.code_systems)
    for sd in (CONTACT_PHONE, PATIENT_WITH_GENDER):
        definitions.add(copy.deepcopy(sd))
    return ProfileValidator(definitions, Terminology(definitions), lambda ref: copy.deepcopy(STORED.get(ref)))


def test_percent_resource_is_the_resource_from_a_nested_element(resolving_validator: ProfileValidator) -> None:
    mother = {"name": {"family": "Lefèvre"}, "telecom": [{"system": "phone", "value": "+33 6 98 76 54 32"}]}
    daughter = patient(meta={"profile": [EX + "contact-distinct"]}, contact=[mother],
                       telecom=[{"system": "phone", "value": "+33 6 12 34 56 78"}])
    assert failed_invariants(resolving_validator, daughter) == []
    daughter["telecom"][0]["value"] = "+33 6 98 76 54 32"        # the patient's own number given as the contact's
    assert failed_invariants(resolving_validator, daughter) == [("error", "esp-contact-1", "Patient.contact[0]")]


def test_percent_root_resource_lets_contained_resources_refer_to_each_other(validator: ProfileValidator) -> None:
    role = {"resourceType": "PractitionerRole", "id": "role", "text": TEXT,
            "practitioner": {"reference": "#dr"}, "organization": {"reference": "#org"}}
    doctor = {"resourceType": "Practitioner", "id": "dr", "text": TEXT, "name": [{"family": "Bertrand"}]}
    holder = patient(contained=[role, doctor, dict(ORGANISATION, text=TEXT)],
                     generalPractitioner=[{"reference": "#role"}])
    assert failed_invariants(validator, copy.deepcopy(holder)) == []    # ref-1 reads %rootResource.contained
    role["organization"] = {"reference": "#absent"}
    holder["contained"][0] = role
    assert ("error", "ref-1", "Patient.contained[0].organization") in failed_invariants(validator, holder)


@pytest.mark.parametrize(("subject", "expected"), [
    ("Patient/avec-sexe", []),
    ("Patient/sans-sexe", [("error", "esp-obs-1", "Observation")]),
    ("Patient/inconnu", []),                       # cannot be resolved: unknown, not a failure
], ids=["stored-conforming", "stored-failing", "unresolvable"])
def test_resolve_reads_the_store(resolving_validator: ProfileValidator, subject: str, expected: list) -> None:
    result = observation(meta={"profile": [EX + "resultat-sexe"]}, subject={"reference": subject})
    assert failed_invariants(resolving_validator, result) == expected


def test_resolve_reads_the_bundle_entries(resolving_validator: ProfileValidator) -> None:
    entry = {"fullUrl": "urn:uuid:5d3c2b1a-0f9e-4d8c-b7a6-112233445566",
             "resource": patient(identifier=[{"system": NIR, "value": "284037512345640"}], gender="female")}
    result = observation(meta={"profile": [EX + "resultat-sexe"]}, subject={"reference": entry["fullUrl"]})
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [entry, {"fullUrl": "urn:uuid:5d3c2b1a-0f9e-4d8c-b7a6-112233445567", "resource": result}]}
    assert failed_invariants(resolving_validator, copy.deepcopy(bundle)) == []
    del bundle["entry"][0]["resource"]["gender"]
    assert failed_invariants(resolving_validator, bundle) == [("error", "esp-obs-1", "Bundle.entry[1].resource")]
