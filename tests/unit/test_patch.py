"""JSON Patch (RFC 6902) and FHIRPath Patch (FHIR R4) applied to resource dicts, without a database."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from fhir_server.engine.errors import FhirError
from fhir_server.engine.patch import apply_fhirpath_patch, apply_json_patch, apply_xml_patch
from fhir_server.formats.json import dump_json, parse_json

BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
DOCUMENT_ORIGIN = "https://espace.example.fr/fhir/StructureDefinition/document-origin"

RESOURCES: dict[str, dict] = {
    "patient": {
        "resourceType": "Patient",
        "id": "p1",
        "name": [
            {"use": "official", "family": "Martin", "given": ["Jean", "Paul"]},
            {"use": "maiden", "family": "Durand", "given": ["Jeanne"]},
        ],
        "telecom": [
            {"system": "phone", "value": "+33 1 23 45 67 89", "use": "home"},
            {"system": "email", "value": "jean.martin@example.fr"},
        ],
        "birthDate": "1980-04-12",
        "_birthDate": {"extension": [{"url": BIRTH_TIME, "valueDateTime": "1980-04-12T08:30:00+02:00"}]},
    },
    # parsed like a request body, so that 1.50 is the Decimal('1.50') the server handles
    "observation": parse_json("""{
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 1.50, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                          "code": "mmol/L"}
    }"""),
    "document": {
        "resourceType": "DocumentReference",
        "id": "d1",
        "status": "current",
        "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                       "code": "N"}]}],
        "extension": [{"url": DOCUMENT_ORIGIN, "valueString": "hospital"}],
        "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/b1"}}],
    },
}

GONE = object()          # an expected change that removes the element


def expected(name: str, changes: list[tuple[tuple, Any]]) -> dict:
    """RESOURCES[name] with `changes` (path steps -> new value, or GONE) applied."""
    resource = copy.deepcopy(RESOURCES[name])
    for (*parents, last), value in changes:
        target = resource
        for step in parents:
            target = target[step]
        if value is GONE:
            del target[last]
        else:
            target[last] = value
    return resource


def fails(apply, *args) -> FhirError:
    with pytest.raises(FhirError) as caught:
        apply(*args)
    return caught.value


def expressions(error: FhirError) -> list[str]:
    return [expression for issue in error.issues for expression in issue.expression]


# =================================================================================================
# JSON Patch
# =================================================================================================

NEW_PHONE = {"system": "phone", "value": "+33 6 00 00 00 00", "use": "mobile"}
PATIENT_TELECOM = RESOURCES["patient"]["telecom"]

JSON_PATCH_CASES = [
    ("replace birthDate", "patient",
     [{"op": "replace", "path": "/birthDate", "value": "1981-05-01"}],
     [(("birthDate",), "1981-05-01")]),
    ("add a telecom at the end of the list", "patient",
     [{"op": "add", "path": "/telecom/-", "value": NEW_PHONE}],
     [(("telecom",), [*PATIENT_TELECOM, NEW_PHONE])]),
    ("add a telecom at index 0", "patient",
     [{"op": "add", "path": "/telecom/0", "value": NEW_PHONE}],
     [(("telecom",), [NEW_PHONE, *PATIENT_TELECOM])]),
    ("add a missing element", "patient",
     [{"op": "add", "path": "/gender", "value": "male"}],
     [(("gender",), "male")]),
    ("add to an existing member replaces it", "patient",
     [{"op": "add", "path": "/name/0/family", "value": "Lefèvre"}],
     [(("name", 0, "family"), "Lefèvre")]),
    ("remove a list item", "patient",
     [{"op": "remove", "path": "/telecom/0"}],
     [(("telecom",), [PATIENT_TELECOM[1]])]),
    ("remove the last item drops the empty list", "document",
     [{"op": "remove", "path": "/securityLabel/0"}],
     [(("securityLabel",), GONE)]),
    ("move a telecom to the front", "patient",
     [{"op": "move", "from": "/telecom/1", "path": "/telecom/0"}],
     [(("telecom",), [PATIENT_TELECOM[1], PATIENT_TELECOM[0]])]),
    ("move onto itself changes nothing", "patient",
     [{"op": "move", "from": "/birthDate", "path": "/birthDate"}],
     []),
    ("copy a given name", "patient",
     [{"op": "copy", "from": "/name/0/given/0", "path": "/name/1/given/-"}],
     [(("name", 1, "given"), ["Jeanne", "Jean"])]),
    ("test then replace the status", "document",
     [{"op": "test", "path": "/status", "value": "current"},
      {"op": "replace", "path": "/status", "value": "entered-in-error"}],
     [(("status",), "entered-in-error")]),
    ("test compares decimals by value", "observation",
     [{"op": "test", "path": "/valueQuantity/value", "value": Decimal("1.5")},
      {"op": "replace", "path": "/status", "value": "amended"}],
     [(("status",), "amended")]),
    ("replace an extension value", "document",
     [{"op": "replace", "path": "/extension/0/valueString", "value": "patient"}],
     [(("extension", 0, "valueString"), "patient")]),
    ("operations apply in order", "patient",
     [{"op": "remove", "path": "/telecom/1"},
      {"op": "remove", "path": "/telecom/0"},
      {"op": "add", "path": "/telecom", "value": [NEW_PHONE]}],
     [(("telecom",), [NEW_PHONE])]),
]


@pytest.mark.parametrize(("resource", "operations", "changes"),
                         [case[1:] for case in JSON_PATCH_CASES], ids=[case[0] for case in JSON_PATCH_CASES])
def test_json_patch(resource, operations, changes):
    original = copy.deepcopy(RESOURCES[resource])

    patched = apply_json_patch(RESOURCES[resource], operations)

    assert patched == expected(resource, changes)
    assert RESOURCES[resource] == original            # the input is never modified


def test_json_patch_keeps_decimal_precision():
    patch = parse_json(b'[{"op": "replace", "path": "/valueQuantity/unit", "value": "mmol/l"}]')

    patched = apply_json_patch(RESOURCES["observation"], patch)

    assert str(patched["valueQuantity"]["value"]) == "1.50"
    assert b'"value":1.50' in dump_json(patched)


def test_json_patch_result_shares_nothing_with_the_patch():
    operations = [{"op": "add", "path": "/telecom/-", "value": {"system": "email", "value": "a@b.fr"}}]

    patched = apply_json_patch(RESOURCES["patient"], operations)
    patched["telecom"][-1]["value"] = "changed@b.fr"

    assert operations[0]["value"]["value"] == "a@b.fr"


JSON_PATCH_ERRORS = [
    ("not a list", {"op": "remove", "path": "/birthDate"},
     400, [], "must be a JSON array"),
    ("operation not an object", ["remove /birthDate"],
     400, [], "operation 0"),
    ("op missing", [{"path": "/birthDate"}],
     400, ["Patient.birthDate"], "operation 0: the 'op' member is missing"),
    ("unknown op, named by its index", [{"op": "test", "path": "/id", "value": "p1"},
                                        {"op": "merge", "path": "/name/0", "value": {}}],
     400, ["Patient.name[0]"], "operation 1: unknown op 'merge'"),
    ("pointer without leading slash", [{"op": "remove", "path": "birthDate"}],
     400, [], "is not a JSON pointer"),
    ("bad escape in pointer", [{"op": "remove", "path": "/name/0/fam~2ily"}],
     400, ["Patient.name[0].fam~2ily"], "'~' not followed by 0 or 1"),
    ("value missing", [{"op": "replace", "path": "/birthDate"}],
     400, ["Patient.birthDate"], "'value' member is missing"),
    ("from missing", [{"op": "copy", "path": "/name/1/given/-"}],
     400, [], "'from' member is missing"),
    ("move into a child of itself", [{"op": "move", "from": "/name/0", "path": "/name/0/given"}],
     400, ["Patient.name[0].given"], "into one of its own children"),
    ("a malformed later operation rejects the whole patch",
     [{"op": "remove", "path": "/nothing-here"}, {"op": "remove"}],
     400, [], "operation 1"),
    ("failing test", [{"op": "test", "path": "/birthDate", "value": "1980-04-13"}],
     422, ["Patient.birthDate"], "operation 0 (test)"),
    ("test does not confuse true and 1", [{"op": "test", "path": "/name/0/family", "value": True}],
     422, ["Patient.name[0].family"], "not the expected one"),
    ("remove a missing element", [{"op": "remove", "path": "/name/5/family"}],
     422, ["Patient.name[5].family"], "does not exist"),
    ("replace under a missing parent", [{"op": "replace", "path": "/contact/0/gender", "value": "male"}],
     422, ["Patient.contact[0].gender"], "does not exist"),
    ("add beyond the end of a list", [{"op": "add", "path": "/telecom/3", "value": NEW_PHONE}],
     422, ["Patient.telecom[3]"], "out of range"),
    ("copy from a missing element", [{"op": "copy", "from": "/deceasedBoolean", "path": "/active"}],
     422, ["Patient.deceasedBoolean"], "does not exist"),
    ("escaped pointer tokens are decoded", [{"op": "remove", "path": "/a~1b~0c"}],
     422, ["Patient.a/b~c"], "does not exist"),
    ("second operation fails", [{"op": "replace", "path": "/birthDate", "value": "2000-01-01"},
                                {"op": "remove", "path": "/telecom/2"}],
     422, ["Patient.telecom[2]"], "operation 1 (remove)"),
]


@pytest.mark.parametrize(("operations", "status", "expression", "diagnostics"),
                         [case[1:] for case in JSON_PATCH_ERRORS], ids=[case[0] for case in JSON_PATCH_ERRORS])
def test_json_patch_errors(operations, status, expression, diagnostics):
    original = copy.deepcopy(RESOURCES["patient"])

    error = fails(apply_json_patch, RESOURCES["patient"], operations)

    assert error.status == status
    assert expressions(error) == expression
    assert diagnostics in error.issues[0].diagnostics
    assert RESOURCES["patient"] == original


# =================================================================================================
# FHIRPath Patch
# =================================================================================================

def operation(kind: str, path: str, **parts: Any) -> dict:
    """One `operation` parameter; `value` is given as the part's own members (valueX, or part)."""
    built = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "value":
            built.append({"name": "value", **value})
        elif name in ("index", "source", "destination"):
            built.append({"name": name, "valueInteger": value})
        else:
            built.append({"name": name, "valueString": value})
    return {"name": "operation", "part": built}


def parameters(*operations: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(operations)}


NEW_PHONE_VALUE = {"valueContactPoint": NEW_PHONE}
ORIGIN_PARTS = {"part": [
    {"name": "url", "valueUri": "http://hl7.org/fhir/StructureDefinition/iso21090-SC-coding"},
    {"name": "value", "valueCoding": {"system": "urn:oid:1.2.250.1.213.1.1.4.12", "code": "DEVICE"}},
]}
COMPONENT_PARTS = {"part": [
    {"name": "code", "part": [{"name": "coding", "valueCoding": {"system": "http://loinc.org", "code": "8480-6"}}]},
    {"name": "value", "valueQuantity": {"value": Decimal("120.0"), "unit": "mm[Hg]"}},
]}
PATIENT_NAMES = RESOURCES["patient"]["name"]

FHIRPATH_PATCH_CASES = [
    ("replace birthDate", "patient",
     [operation("replace", "Patient.birthDate", value={"valueDate": "1981-05-01"})],
     [(("birthDate",), "1981-05-01")]),
    ("add a telecom to the list", "patient",
     [operation("add", "Patient", name="telecom", value=NEW_PHONE_VALUE)],
     [(("telecom",), [*PATIENT_TELECOM, NEW_PHONE])]),
    ("add a missing single element", "patient",
     [operation("add", "Patient", name="gender", value={"valueCode": "male"})],
     [(("gender",), "male")]),
    ("add the first element of a repeating one creates the list", "patient",
     [operation("add", "Patient", name="identifier",
                value={"valueIdentifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1800412345678"}})],
     [(("identifier",), [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1800412345678"}])]),
    ("add a given name to the official name", "patient",
     [operation("add", "Patient.name.where(use='official')", name="given", value={"valueString": "Marie"})],
     [(("name", 0, "given"), ["Jean", "Paul", "Marie"])]),
    ("insert a telecom at index 0", "patient",
     [operation("insert", "Patient.telecom", index=0, value=NEW_PHONE_VALUE)],
     [(("telecom",), [NEW_PHONE, *PATIENT_TELECOM])]),
    ("insert into a list that does not exist yet", "patient",
     [operation("insert", "Patient.generalPractitioner", index=0,
                value={"valueReference": {"reference": "Practitioner/gp"}})],
     [(("generalPractitioner",), [{"reference": "Practitioner/gp"}])]),
    ("insert a given name in the maiden name", "patient",
     [operation("insert", "Patient.name.where(use='maiden').given", index=1, value={"valueString": "Anne"})],
     [(("name", 1, "given"), ["Jeanne", "Anne"])]),
    ("delete with a where() path", "patient",
     [operation("delete", "Patient.telecom.where(system='email')")],
     [(("telecom",), [PATIENT_TELECOM[0]])]),
    ("delete a primitive chosen with where($this)", "patient",
     [operation("delete", "Patient.name.given.where($this = 'Paul')")],
     [(("name", 0, "given"), ["Jean"])]),
    ("delete a primitive also deletes its extensions", "patient",
     [operation("delete", "Patient.birthDate")],
     [(("birthDate",), GONE), (("_birthDate",), GONE)]),
    ("delete of nothing is not an error", "patient",
     [operation("delete", "Patient.telecom.where(system='fax')")],
     []),
    ("delete the last security label drops the list", "document",
     [operation("delete", "DocumentReference.securityLabel[0]")],
     [(("securityLabel",), GONE)]),
    ("replace status", "document",
     [operation("replace", "DocumentReference.status", value={"valueCode": "superseded"})],
     [(("status",), "superseded")]),
    ("replace a security label with a CodeableConcept", "document",
     [operation("replace", "DocumentReference.securityLabel.first()",
                value={"valueCodeableConcept": {"coding": [{"code": "R"}]}})],
     [(("securityLabel",), [{"coding": [{"code": "R"}]}])]),
    ("replace an extension value selected by url", "document",
     [operation("replace", f"DocumentReference.extension('{DOCUMENT_ORIGIN}').value",
                value={"valueString": "general-practitioner"})],
     [(("extension", 0, "valueString"), "general-practitioner")]),
    ("replace a choice element with another type renames it", "observation",
     [operation("replace", "Observation.value", value={"valueString": "haemolysed sample"})],
     [(("valueQuantity",), GONE), (("valueString",), "haemolysed sample")]),
    ("replace a decimal keeps its precision", "observation",
     [operation("replace", "Observation.value.value", value={"valueDecimal": Decimal("2.50")})],
     [(("valueQuantity", "value"), Decimal("2.50"))]),
    ("add an extension built from nested parts", "document",
     [operation("add", "DocumentReference", name="extension", value=ORIGIN_PARTS)],
     [(("extension",), [*RESOURCES["document"]["extension"],
                        {"url": "http://hl7.org/fhir/StructureDefinition/iso21090-SC-coding",
                         "valueCoding": {"system": "urn:oid:1.2.250.1.213.1.1.4.12", "code": "DEVICE"}}])]),
    ("add a backbone element built from nested parts", "observation",
     [operation("add", "Observation", name="component", value=COMPONENT_PARTS)],
     [(("component",), [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                         "valueQuantity": {"value": Decimal("120.0"), "unit": "mm[Hg]"}}])]),
    ("move a telecom to the front", "patient",
     [operation("move", "Patient.telecom", source=1, destination=0)],
     [(("telecom",), [PATIENT_TELECOM[1], PATIENT_TELECOM[0]])]),
    ("move a given name", "patient",
     [operation("move", "Patient.name[0].given", source=0, destination=1)],
     [(("name", 0, "given"), ["Paul", "Jean"])]),
    ("operations apply in order", "patient",
     [operation("delete", "Patient.name.where(use='maiden')"),
      operation("replace", "Patient.name.family", value={"valueString": "Lefèvre"})],
     [(("name",), [{**PATIENT_NAMES[0], "family": "Lefèvre"}])]),
]


@pytest.mark.parametrize(("resource", "operations", "changes"),
                         [case[1:] for case in FHIRPATH_PATCH_CASES],
                         ids=[case[0] for case in FHIRPATH_PATCH_CASES])
def test_fhirpath_patch(resource, operations, changes):
    original = copy.deepcopy(RESOURCES[resource])

    patched = apply_fhirpath_patch(RESOURCES[resource], parameters(*operations))

    assert patched == expected(resource, changes)
    assert RESOURCES[resource] == original            # the input is never modified


def test_fhirpath_patch_keeps_decimal_precision():
    patch = parameters(operation("replace", "Observation.status", value={"valueCode": "amended"}),
                       operation("replace", "Observation.value.unit", value={"valueString": "mmol/l"}))

    patched = apply_fhirpath_patch(RESOURCES["observation"], patch)

    assert str(patched["valueQuantity"]["value"]) == "1.50"
    assert b'"value":1.50' in dump_json(patched)


def test_fhirpath_patch_result_shares_nothing_with_the_patch():
    patch = parameters(operation("add", "Patient", name="telecom", value={"valueContactPoint": {"value": "a"}}))

    patched = apply_fhirpath_patch(RESOURCES["patient"], patch)
    patched["telecom"][-1]["value"] = "changed"

    assert patch["parameter"][0]["part"][3]["valueContactPoint"] == {"value": "a"}


def test_fhirpath_patch_with_no_operation_returns_an_equal_copy():
    patched = apply_fhirpath_patch(RESOURCES["patient"], {"resourceType": "Parameters"})

    assert patched == RESOURCES["patient"] and patched is not RESOURCES["patient"]


FHIRPATH_PATCH_ERRORS = [
    # -- malformed Parameters: 400, located in the Parameters resource
    ("not a Parameters resource", {"resourceType": "Patient"},
     400, ["Parameters"], "must be a Parameters resource"),
    ("parameter not named operation", {"resourceType": "Parameters", "parameter": [{"name": "op", "part": []}]},
     400, ["Parameters.parameter[0].name"], "must be named 'operation'"),
    ("operation without parts", parameters({"name": "operation"}),
     400, ["Parameters.parameter[0].part"], "has no parts"),
    ("type missing", parameters({"name": "operation", "part": [{"name": "path", "valueString": "Patient"}]}),
     400, ["Parameters.parameter[0].part"], "no 'type' part"),
    ("unknown type", parameters(operation("upsert", "Patient.birthDate")),
     400, ["Parameters.parameter[0].part[0]"], "type 'upsert'"),
    ("path missing", parameters({"name": "operation", "part": [{"name": "type", "valueCode": "delete"}]}),
     400, ["Parameters.parameter[0].part"], "no 'path' part"),
    ("path not a string", parameters({"name": "operation", "part": [{"name": "type", "valueCode": "delete"},
                                                                    {"name": "path", "valueInteger": 3}]}),
     400, ["Parameters.parameter[0].part[1]"], "must have a valueString"),
    ("add without name", parameters(operation("add", "Patient", value={"valueCode": "male"})),
     400, ["Parameters.parameter[0].part"], "(add) has no 'name' part"),
    ("replace without value", parameters(operation("replace", "Patient.birthDate")),
     400, ["Parameters.parameter[0].part"], "(replace) has no 'value' part"),
    ("index not an integer", parameters({"name": "operation", "part": [
        {"name": "type", "valueCode": "insert"}, {"name": "path", "valueString": "Patient.telecom"},
        {"name": "index", "valueString": "0"}, {"name": "value", **NEW_PHONE_VALUE}]}),
     400, ["Parameters.parameter[0].part[2]"], "must have a valueInteger"),
    ("value both value[x] and parts",
     parameters(operation("add", "Patient", name="gender", value={"valueCode": "male", "part": []})),
     400, ["Parameters.parameter[0].part[3]"], "exactly one of"),
    ("unnamed nested part", parameters(operation("add", "Patient", name="contact",
                                                 value={"part": [{"valueString": "x"}]})),
     400, ["Parameters.parameter[0].part[3].part[0]"], "must have a name"),
    ("path that is not FHIRPath", parameters(operation("delete", "Patient.name.where(")),
     400, ["Parameters.parameter[0].part[1]"], "cannot be evaluated"),
    ("a malformed later operation rejects the whole patch",
     parameters(operation("delete", "Patient.birthDate"), operation("rename", "Patient.gender")),
     400, ["Parameters.parameter[1].part[0]"], "operation 1"),
    ("a malformed later value is a 400 even when an earlier operation cannot apply",
     parameters(operation("replace", "Patient.gender", value={"valueCode": "male"}),
                operation("add", "Patient", name="gender", value={"valueCode": "male", "part": []})),
     400, ["Parameters.parameter[1].part[3]"], "exactly one of"),
    # -- well-formed but not applicable to this resource: 422, located with the patch path
    ("replace matching several elements", parameters(operation("replace", "Patient.telecom",
                                                               value=NEW_PHONE_VALUE)),
     422, ["Patient.telecom"], "selects 2 elements"),
    ("replace matching nothing", parameters(operation("replace", "Patient.gender", value={"valueCode": "male"})),
     422, ["Patient.gender"], "selects no element"),
    ("delete matching several elements", parameters(operation("delete", "Patient.name.given")),
     422, ["Patient.name.given"], "only one element can be deleted"),
    ("add to several elements", parameters(operation("add", "Patient.name", name="prefix",
                                                     value={"valueString": "M."})),
     422, ["Patient.name"], "selects 2 elements"),
    ("add a non-repeating element that exists", parameters(operation("add", "Patient", name="birthDate",
                                                                     value={"valueDate": "1990-01-01"})),
     422, ["Patient"], "use replace"),
    ("add an element the type does not have", parameters(operation("add", "Patient", name="nickname",
                                                                   value={"valueString": "Jeannot"})),
     422, ["Patient"], "no element 'nickname'"),
    ("add to a primitive", parameters(operation("add", "Patient.birthDate", name="id", value={"valueId": "x"})),
     422, ["Patient.birthDate"], "complex element"),
    ("insert beyond the end", parameters(operation("insert", "Patient.telecom", index=3, value=NEW_PHONE_VALUE)),
     422, ["Patient.telecom"], "index 3 is outside 0..2"),
    ("insert into a non-repeating element", parameters(operation("insert", "Patient.birthDate", index=0,
                                                                 value={"valueDate": "1990-01-01"})),
     422, ["Patient.birthDate"], "not a repeating element"),
    ("insert into a list of several owners", parameters(operation("insert", "Patient.name.given", index=0,
                                                                  value={"valueString": "Luc"})),
     422, ["Patient.name.given"], "exactly one element"),
    ("move from outside the list", parameters(operation("move", "Patient.telecom", source=2, destination=0)),
     422, ["Patient.telecom"], "source index 2 is outside 0..1"),
    ("move in a list that does not exist", parameters(operation("move", "Patient.identifier", source=0,
                                                                destination=0)),
     422, ["Patient.identifier"], "no 'identifier' list"),
    ("path computing a value", parameters(operation("delete", "Patient.name.exists()")),
     422, ["Patient.name.exists()"], "computed values"),
    ("delete the resource itself", parameters(operation("delete", "Patient")),
     422, ["Patient"], "cannot be deleted"),
    ("second operation fails", parameters(operation("replace", "Patient.birthDate", value={"valueDate": "2000"}),
                                          operation("replace", "Patient.gender", value={"valueCode": "male"})),
     422, ["Patient.gender"], "operation 1 (replace)"),
]


@pytest.mark.parametrize(("patch", "status", "expression", "diagnostics"),
                         [case[1:] for case in FHIRPATH_PATCH_ERRORS],
                         ids=[case[0] for case in FHIRPATH_PATCH_ERRORS])
def test_fhirpath_patch_errors(patch, status, expression, diagnostics):
    original = copy.deepcopy(RESOURCES["patient"])

    error = fails(apply_fhirpath_patch, RESOURCES["patient"], patch)

    assert error.status == status
    assert error.issues[0].code == ("invalid" if status == 400 else "processing")
    assert expressions(error) == expression
    assert diagnostics in error.issues[0].diagnostics
    assert RESOURCES["patient"] == original


# =================================================================================================
# XML Patch (RFC 5261)
# =================================================================================================

def xml_patch(*operations: str, declarations: str = 'xmlns:f="http://hl7.org/fhir"') -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><diff {declarations}>{"".join(operations)}</diff>'.encode()


def test_xml_patch_replaces_adds_and_removes():
    patient = copy.deepcopy(RESOURCES["patient"])
    patched = apply_xml_patch(patient, xml_patch(
        '<replace sel="f:Patient/f:name[1]/f:family/@value">Lefèvre</replace>',
        '<add sel="f:Patient"><active xmlns="http://hl7.org/fhir" value="true"/></add>',
        '<add sel="f:Patient/f:name[1]/f:given[2]" pos="after"><given xmlns="http://hl7.org/fhir" value="Marie"/>'
        '</add>',
        '<remove sel="f:Patient/f:telecom[f:system/@value=\'email\']"/>',
        '<remove sel="/f:Patient/f:name[2]/f:use"/>',
    ))
    assert patched["name"][0] == {"use": "official", "family": "Lefèvre", "given": ["Jean", "Paul", "Marie"]}
    assert patched["name"][1] == {"family": "Durand", "given": ["Jeanne"]}
    assert patched["active"] is True
    assert [t["system"] for t in patched["telecom"]] == ["phone"]
    assert patched["_birthDate"] == patient["_birthDate"]               # untouched parts stay as they were
    assert patient == RESOURCES["patient"]                              # the input is left alone


def test_xml_patch_prepend_attribute_and_replace_element():
    observation = RESOURCES["observation"]
    patched = apply_xml_patch(observation, xml_patch(
        '<add sel="f:Observation/f:code" pos="prepend"><text xmlns="http://hl7.org/fhir" value="Glucose"/></add>',
        '<replace sel="f:Observation/f:status"><status xmlns="http://hl7.org/fhir" value="amended"/></replace>',
        '<add sel="f:Observation/f:subject" type="@id">sujet</add>',
    ))
    assert patched["code"]["text"] == "Glucose" and patched["status"] == "amended"
    assert patched["subject"] == {"id": "sujet", "reference": "Patient/p1"}
    assert patched["valueQuantity"]["value"] == Decimal("1.50")         # decimals stay exact
    assert dump_json(patched["valueQuantity"]).startswith(b'{"value":1.50')


@pytest.mark.parametrize(("document", "reason"), [
    (b"<diff><replace", "not well-formed"),
    (b'<!DOCTYPE diff [<!ENTITY x "y">]><diff/>', "DOCTYPE"),
    (xml_patch('<move sel="f:Patient"/>'), "is not an operation"),
    (xml_patch('<remove/>'), "sel attribute"),
    (xml_patch('<remove sel="f:Patient/["/>'), "not a valid XPath"),
    (xml_patch('<remove sel="count(f:Patient/f:name)"/>'), "must select a node"),
    (xml_patch('<add sel="f:Patient" pos="inside"><active xmlns="http://hl7.org/fhir" value="true"/></add>'), "pos"),
    (xml_patch('<add sel="f:Patient"><active value="true"/></add>'), "not in the FHIR namespace"),
    (xml_patch('<add sel="f:Patient">du texte</add>'), "no text outside attributes"),
    (xml_patch('<replace sel="f:Patient/f:birthDate"><a xmlns="http://hl7.org/fhir"/><b xmlns="http://hl7.org/fhir"/>'
               '</replace>'), "exactly one element"),
    (xml_patch('<remove sel="re:test(\'a\', \'a\')"/>', declarations='xmlns:re="http://exslt.org/regular-expressions"'),
     "not a valid XPath"),
])
def test_malformed_xml_patch_is_a_400(document, reason):
    with pytest.raises(FhirError) as raised:
        apply_xml_patch(RESOURCES["patient"], document)
    assert raised.value.status == 400
    assert reason in raised.value.issues[0].diagnostics


@pytest.mark.parametrize(("operation", "reason", "expression"), [
    ('<remove sel="f:Patient/f:gender"/>', "selects 0", "Patient"),
    ('<remove sel="f:Patient/f:name"/>', "selects 2", "Patient"),
    ('<remove sel="f:Patient"/>', "resource itself", "Patient"),
    ('<add sel="f:Patient/f:name[1]/f:use" type="@value">usual</add>', "already has a value attribute",
     "Patient.name[0].use"),
    ('<add sel="f:Patient"><surnom xmlns="http://hl7.org/fhir" value="Jeannot"/></add>', "not valid FHIR XML",
     "Patient.surnom"),
    ('<remove sel="f:Patient/f:name[1]/f:use/@value"/>', "neither a value nor extensions", "Patient.name[0].use"),
])
def test_inapplicable_xml_patch_is_a_422(operation, reason, expression):
    with pytest.raises(FhirError) as raised:
        apply_xml_patch(RESOURCES["patient"], xml_patch(operation))
    assert raised.value.status == 422
    assert reason in raised.value.issues[0].diagnostics
    assert raised.value.issues[0].expression[0].startswith(expression)
