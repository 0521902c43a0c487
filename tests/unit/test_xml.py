"""FHIR XML <-> JSON conversion (fhir_server.formats.xml), driven by the R4 StructureDefinitions."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from lxml import etree

from fhir_server.definitions import load_definitions
from fhir_server.engine.errors import FhirError
from fhir_server.formats.xml import FHIR_NS, XML_DECLARATION, resource_to_xml, xml_to_resource

F = "{" + FHIR_NS + "}"
DIV = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Jean <b>Durand</b> &amp; co &lt;3</p><br/></div>'
BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"


def round_trip(resource: dict, pretty: bool = False) -> dict:
    return xml_to_resource(resource_to_xml(resource, pretty=pretty))


def fhir_xml(body: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'.encode()


def child_names(elem: etree._Element) -> list[str]:
    return [etree.QName(child).localname for child in elem]


def raises_fhir(data: bytes, **kwargs) -> FhirError:
    with pytest.raises(FhirError) as caught:
        xml_to_resource(data, **kwargs)
    return caught.value


# -- representative resources ---------------------------------------------------------------------

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"versionId": "2", "lastUpdated": "2024-05-01T10:00:00Z", "profile": ["http://example.org/p"]},
    "text": {"status": "generated", "div": DIV},
    "extension": [{
        "url": "http://example.org/nested",
        "extension": [{"url": "part", "valueCode": "a"}, {"url": "flag", "valueBoolean": False}],
    }],
    "modifierExtension": [{"url": "http://example.org/mod", "valueString": "m"}],
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "123",
                    "period": {"start": "2020-01-01"}}],
    "active": True,
    "name": [
        {"id": "n1", "use": "official", "family": "Durand", "given": ["Jean", None, "Paul"],
         "_given": [None, {"extension": [{"url": "http://example.org/initial", "valueString": "M"}]},
                    {"id": "g3"}]},
        {"given": ["Johnny"]},
    ],
    "gender": "male",
    "birthDate": "1970-03-30",
    "_birthDate": {"id": "bd",
                   "extension": [{"url": BIRTH_TIME, "valueDateTime": "1970-03-30T14:35:45-05:00"}]},
    "multipleBirthInteger": 2,
    "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131",
                                               "code": "N", "userSelected": True}]}],
                 "name": {"family": "Durand"}}],
}

OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
    "effectiveDateTime": "2024-01-02T03:04:05+01:00",
    "valueQuantity": {"value": Decimal("1.50"), "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                      "code": "mmol/L"},
    "referenceRange": [{"low": {"value": Decimal("0.0")}, "high": {"value": Decimal("-1.0E+2")}}],
    "component": [{"code": {"text": "count"}, "valueInteger": 0},
                  {"code": {"text": "ratio"}, "valueRatio": {"numerator": {"value": 3}}}],
}

PATIENT_UUID = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"
TRANSACTION = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {"fullUrl": PATIENT_UUID,
         "resource": {"resourceType": "Patient", "name": [{"family": "Martin"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=123"}},
        {"resource": OBSERVATION | {"subject": {"reference": PATIENT_UUID}},
         "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "DELETE", "url": "Patient/old"}},
    ],
}

BATCH_RESPONSE = {
    "resourceType": "Bundle",
    "type": "batch-response",
    "entry": [{"response": {
        "status": "400 Bad Request",
        "outcome": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "invalid", "diagnostics": "Unknown element 'foo'",
             "expression": ["Patient.foo"]}]},
    }}],
}

QUESTIONNAIRE = {
    "resourceType": "Questionnaire",
    "status": "active",
    "item": [{
        "linkId": "1", "type": "group", "text": "Smoking",
        "item": [
            {"linkId": "1.1", "type": "boolean", "text": "Do you smoke?", "required": True},
            {"linkId": "1.2", "type": "group",
             "enableWhen": [{"question": "1.1", "operator": "=", "answerBoolean": True}],
             "item": [{"linkId": "1.2.1", "type": "decimal", "text": "Packs a day",
                       "initial": [{"valueDecimal": Decimal("0.50")}]}]},
        ],
    }],
}

PARAMETERS = {
    "resourceType": "Parameters",
    "parameter": [
        {"name": "count", "valueUnsignedInt": 0},
        {"name": "return", "resource": {"resourceType": "Patient", "id": "x", "active": False}},
        {"name": "group", "part": [{"name": "code", "valueCode": "abc"},
                                   {"name": "amount", "valueDecimal": Decimal("12.340")}]},
    ],
}

CONTAINED = {
    "resourceType": "MedicationRequest",
    "contained": [{"resourceType": "Medication", "id": "med1", "code": {"text": "Paracetamol 500 mg"}},
                  {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "House"}]}],
    "status": "active",
    "intent": "order",
    "medicationReference": {"reference": "#med1"},
    "subject": {"reference": "Patient/p1"},
    "requester": {"reference": "#pr1"},
}


@pytest.mark.parametrize("resource", [PATIENT, OBSERVATION, TRANSACTION, BATCH_RESPONSE, QUESTIONNAIRE,
                                      PARAMETERS, CONTAINED],
                         ids=["patient", "observation", "transaction", "batch-response", "questionnaire",
                              "parameters", "contained"])
@pytest.mark.parametrize("pretty", [False, True], ids=["compact", "pretty"])
def test_json_xml_json_round_trip(resource: dict, pretty: bool) -> None:
    original = copy.deepcopy(resource)
    assert round_trip(resource, pretty) == original
    assert resource == original  # the writer does not mutate its input


def test_decimal_precision_is_kept_both_ways() -> None:
    xml = resource_to_xml(OBSERVATION)
    assert b'<valueQuantity><value value="1.50"/>' in xml
    assert b'<high><value value="-1.0E+2"/></high>' in xml
    value = xml_to_resource(xml)["valueQuantity"]["value"]
    assert isinstance(value, Decimal) and str(value) == "1.50"


def test_primitive_extensions_are_written_inside_the_element() -> None:
    root = etree.fromstring(resource_to_xml(PATIENT))
    birth_date = root.find(F + "birthDate")
    assert birth_date.attrib == {"id": "bd", "value": "1970-03-30"}
    assert birth_date[0].get("url") == BIRTH_TIME
    assert birth_date[0][0].tag == F + "valueDateTime"
    givens = root.find(F + "name").findall(F + "given")
    assert [dict(g.attrib) for g in givens] == [{"value": "Jean"}, {}, {"id": "g3", "value": "Paul"}]
    assert givens[1][0].get("url") == "http://example.org/initial"


def test_narrative_is_embedded_as_xhtml_and_pretty_printing_leaves_it_alone() -> None:
    xml = resource_to_xml(PATIENT, pretty=True)
    assert f"    {DIV}\n".encode() in xml
    div = etree.fromstring(xml).find(F + "text")[1]
    assert div.tag == "{http://www.w3.org/1999/xhtml}div"
    assert [etree.QName(e).localname for e in div.iter()] == ["div", "p", "b", "br"]


def test_div_without_xmlns_is_put_in_the_xhtml_namespace() -> None:
    resource = {"resourceType": "Basic", "code": {"text": "x"},
                "text": {"status": "generated", "div": "<div><p>Hi</p></div>"}}
    back = round_trip(resource)
    assert back["text"]["div"] == '<div xmlns="http://www.w3.org/1999/xhtml"><p>Hi</p></div>'


def test_output_starts_with_the_declaration_and_fhir_namespace() -> None:
    xml = resource_to_xml({"resourceType": "Patient", "id": "a", "active": False})
    assert xml == (XML_DECLARATION
                   + b'<Patient xmlns="http://hl7.org/fhir"><id value="a"/><active value="false"/></Patient>')


# -- element order --------------------------------------------------------------------------------

def test_elements_follow_the_structure_definition_order() -> None:
    shuffled = dict(reversed(list(PATIENT.items())))
    root = etree.fromstring(resource_to_xml(shuffled))
    expected = [name for name in load_definitions().children("Patient") if name in PATIENT]
    assert list(dict.fromkeys(child_names(root))) == expected
    assert child_names(root) == ["id", "meta", "text", "extension", "modifierExtension", "identifier",
                                 "active", "name", "name", "gender", "birthDate", "multipleBirthInteger",
                                 "contact"]
    name = root.find(F + "name")
    assert name.get("id") == "n1"  # Element.id is an attribute, Resource.id an element
    assert child_names(name) == ["use", "family", "given", "given", "given"]


def test_choice_elements_sit_at_the_choice_position() -> None:
    observation = {"resourceType": "Observation", "note": [{"text": "n"}], "valueString": "v",
                   "performer": [{"reference": "Practitioner/1"}], "status": "final", "code": {"text": "c"}}
    root = etree.fromstring(resource_to_xml(observation))
    assert child_names(root) == ["status", "code", "performer", "valueString", "note"]


def test_extension_url_is_an_attribute_before_the_value() -> None:
    xml = resource_to_xml({"resourceType": "Basic", "code": {"text": "x"},
                           "extension": [{"valueInteger": 5, "url": "http://e", "id": "e1"}]})
    assert b'<extension id="e1" url="http://e"><valueInteger value="5"/></extension>' in xml


# -- XML as written in the specification ----------------------------------------------------------

SPEC_PATIENT = fhir_xml("""<!-- a comment before the root -->
<Patient xmlns="http://hl7.org/fhir" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://hl7.org/fhir ../../schema/patient.xsd">
  <id value="example"/>
  <!--   the narrative   -->
  <text>
    <status value="generated"/>
    <div xmlns="http://www.w3.org/1999/xhtml">
      <table><tr><td>Name</td><td>Peter James <b>Chalmers</b></td></tr></table>
    </div>
  </text>
  <identifier>
    <use value="usual"/>
    <type>
      <coding>
        <system value="http://terminology.hl7.org/CodeSystem/v2-0203"/>
        <code value="MR"/>
      </coding>
    </type>
    <system value="urn:oid:1.2.36.146.595.217.0.1"/>
    <value value="12345"/>
  </identifier>
  <active value="true"/>
  <name>
    <use value="official"/>
    <family value="Chalmers"/>
    <given value="Peter"/>
    <given value="James"/>
  </name>
  <name>
    <use value="maiden"/>
    <given value="Jim"/>
  </name>
  <gender value="male"/>
  <birthDate value="1974-12-25">
    <extension url="http://hl7.org/fhir/StructureDefinition/patient-birthTime">
      <valueDateTime value="1974-12-25T14:35:45-05:00"/>
    </extension>
  </birthDate>
  <deceasedBoolean value="false"/>
  <managingOrganization>
    <reference value="Organization/1"/>
  </managingOrganization>
</Patient>
""")


def test_spec_shaped_xml_is_parsed() -> None:
    assert xml_to_resource(SPEC_PATIENT) == {
        "resourceType": "Patient",
        "id": "example",
        "text": {"status": "generated", "div": (
            '<div xmlns="http://www.w3.org/1999/xhtml">\n'
            "      <table><tr><td>Name</td><td>Peter James <b>Chalmers</b></td></tr></table>\n"
            "    </div>")},
        "identifier": [{"use": "usual",
                        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                             "code": "MR"}]},
                        "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
        "active": True,
        "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
                 {"use": "maiden", "given": ["Jim"]}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": BIRTH_TIME, "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "deceasedBoolean": False,
        "managingOrganization": {"reference": "Organization/1"},
    }


def test_element_order_in_the_input_does_not_matter() -> None:
    xml = fhir_xml('<Patient xmlns="http://hl7.org/fhir"><gender value="female"/><name><given value="A"/>'
                   '<family value="B"/><given value="C"/></name><id value="x"/></Patient>')
    result = xml_to_resource(xml)
    assert result == {"resourceType": "Patient", "id": "x", "name": [{"family": "B", "given": ["A", "C"]}],
                      "gender": "female"}
    assert list(result) == ["resourceType", "id", "name", "gender"]


def test_typed_primitive_values() -> None:
    xml = fhir_xml('<Parameters xmlns="http://hl7.org/fhir">'
                   '<parameter><name value="a"/><valueInteger value="-12"/></parameter>'
                   '<parameter><name value="b"/><valuePositiveInt value="7"/></parameter>'
                   '<parameter><name value="c"/><valueDecimal value="3.14159000"/></parameter>'
                   '<parameter><name value="d"/><valueBoolean value="false"/></parameter>'
                   '<parameter><name value="e"/><valueString value=" spaced &amp; &#10;lined "/></parameter>'
                   '<parameter><name value="f"/><valueDate value="2024"/></parameter>'
                   '</Parameters>')
    parameters = xml_to_resource(xml)["parameter"]
    values = [next(v for k, v in p.items() if k.startswith("value")) for p in parameters]
    assert values == [-12, 7, Decimal("3.14159000"), False, " spaced & \nlined ", "2024"]
    assert [type(v) for v in values] == [int, int, Decimal, bool, str, str]
    assert str(values[2]) == "3.14159000"


def test_nested_resources_in_xml() -> None:
    xml = fhir_xml('<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/>'
                   '<entry><resource><Patient><id value="a"/></Patient></resource></entry>'
                   '<entry><resource><Basic><code><text value="t"/></code>'
                   '<contained><Organization><name value="O"/></Organization></contained>'
                   '</Basic></resource></entry></Bundle>')
    assert xml_to_resource(xml) == {
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient", "id": "a"}},
                  {"resource": {"resourceType": "Basic", "contained": [{"resourceType": "Organization",
                                                                         "name": "O"}],
                                "code": {"text": "t"}}}],
    }


def test_array_elements_are_lists_even_when_they_occur_once() -> None:
    result = xml_to_resource(fhir_xml('<Patient xmlns="http://hl7.org/fhir"><name><given value="A"/></name>'
                                      '</Patient>'))
    assert result == {"resourceType": "Patient", "name": [{"given": ["A"]}]}


def test_primitive_with_only_an_extension_in_an_array() -> None:
    xml = fhir_xml('<Patient xmlns="http://hl7.org/fhir"><name><given value="A"/>'
                   '<given><extension url="http://e"><valueCode value="x"/></extension></given>'
                   '</name></Patient>')
    assert xml_to_resource(xml)["name"] == [{
        "given": ["A", None],
        "_given": [None, {"extension": [{"url": "http://e", "valueCode": "x"}]}],
    }]


# -- errors ---------------------------------------------------------------------------------------

def test_unknown_element_is_rejected_with_its_expression() -> None:
    err = raises_fhir(fhir_xml('<Patient xmlns="http://hl7.org/fhir"><name><nickname value="x"/></name>'
                               '</Patient>'))
    assert err.status == 400
    assert err.issues[0].code == "invalid"
    assert err.issues[0].expression == ("Patient.name[0].nickname",)
    assert "nickname" in err.issues[0].diagnostics


def test_unknown_attribute_is_rejected() -> None:
    err = raises_fhir(fhir_xml('<Patient xmlns="http://hl7.org/fhir" id="x"/>'))
    assert (err.status, err.issues[0].expression) == (400, ("Patient",))


def test_bad_boolean_is_rejected() -> None:
    err = raises_fhir(fhir_xml('<Patient xmlns="http://hl7.org/fhir"><active value="yes"/></Patient>'))
    assert err.status == 400
    assert err.issues[0].expression == ("Patient.active",)
    assert "'yes'" in err.issues[0].diagnostics


@pytest.mark.parametrize(("element", "expression"), [
    ('<multipleBirthInteger value="1.5"/>', "Patient.multipleBirthInteger"),
    ('<multipleBirthInteger value="99999999999"/>', "Patient.multipleBirthInteger"),
    ('<photo><size value="-1"/></photo>', "Patient.photo[0].size"),
    ('<birthDate/>', "Patient.birthDate"),
    ('<birthDate value=""/>', "Patient.birthDate"),
    ('<gender value="male"/><gender value="female"/>', "Patient.gender"),
    ('<active value="true">yes</active>', "Patient.active"),
    ('<managingOrganization>Organization/1</managingOrganization>', "Patient.managingOrganization"),
    ('<contained><Nope/></contained>', "Patient.contained[0]"),
    ('<contained/>', "Patient.contained[0]"),
    ('<text><status value="generated"/><div><p/></div></text>', "Patient.text.div"),
    ('<name xmlns="http://example.org/other"><family value="x"/></name>', "Patient.name"),
])
def test_invalid_content_is_rejected(element: str, expression: str) -> None:
    err = raises_fhir(fhir_xml(f'<Patient xmlns="http://hl7.org/fhir">{element}</Patient>'))
    assert err.status == 400
    assert err.issues[0].expression == (expression,)


def test_bad_decimal_is_rejected() -> None:
    err = raises_fhir(fhir_xml('<Observation xmlns="http://hl7.org/fhir"><status value="final"/>'
                               '<code><text value="t"/></code><valueQuantity><value value="1,5"/>'
                               '</valueQuantity></Observation>'))
    assert (err.status, err.issues[0].expression) == (400, ("Observation.valueQuantity.value",))


@pytest.mark.parametrize("root", [
    '<Patient xmlns="http://example.org/fhir"/>',
    "<Patient/>",
])
def test_wrong_root_namespace_is_rejected(root: str) -> None:
    err = raises_fhir(fhir_xml(root))
    assert err.status == 400
    assert err.issues[0].expression == ("Patient",)
    assert "http://hl7.org/fhir" in err.issues[0].diagnostics


def test_unknown_resource_type_is_rejected() -> None:
    err = raises_fhir(fhir_xml('<Patients xmlns="http://hl7.org/fhir"/>'))
    assert (err.status, err.issues[0].expression) == (400, ("Patients",))


def test_malformed_xml_is_rejected() -> None:
    assert raises_fhir(b'<Patient xmlns="http://hl7.org/fhir"><id value="x"></Patient>').status == 400
    assert raises_fhir(b"").status == 400


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_external_entity_is_rejected_without_reading_the_file(tmp_path, encoding: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    document = (f'<?xml version="1.0" encoding="{encoding}"?>\n'
                f'<!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
                # in element text, so a substituted entity would surface in the "text content" error
                '<Patient xmlns="http://hl7.org/fhir"><name><family>&xxe;</family></name></Patient>')
    err = raises_fhir(document.encode(encoding))
    assert err.status == 400
    assert "DOCTYPE" in err.issues[0].diagnostics
    assert "TOP-SECRET-CONTENT" not in str(err)


def test_billion_laughs_is_rejected() -> None:
    entities = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    document = (f'<!DOCTYPE Patient [<!ENTITY lol0 "lol">{entities}]>'
                '<Patient xmlns="http://hl7.org/fhir"><id value="&lol9;"/></Patient>')
    err = raises_fhir(document.encode())
    assert err.status == 400
    assert "DOCTYPE" in err.issues[0].diagnostics


def test_oversize_body_is_rejected_with_413() -> None:
    body = fhir_xml('<Patient xmlns="http://hl7.org/fhir"><id value="x"/></Patient>')
    assert xml_to_resource(body, max_bytes=len(body)) == {"resourceType": "Patient", "id": "x"}
    err = raises_fhir(body, max_bytes=len(body) - 1)
    assert err.status == 413
    assert err.issues[0].code == "too-costly"


def test_processing_instructions_are_ignored() -> None:
    xml = fhir_xml('<?xml-stylesheet href="x.xsl"?><Patient xmlns="http://hl7.org/fhir"><?pi data?>'
                   '<id value="x"/></Patient>')
    assert xml_to_resource(xml) == {"resourceType": "Patient", "id": "x"}


@pytest.mark.parametrize(("resource", "expression"), [
    ({"resourceType": "Patient", "nickname": "x"}, "Patient.nickname"),
    ({"resourceType": "Patient", "name": {"family": "x"}}, "Patient.name"),
    ({"resourceType": "Patient", "gender": ["male"]}, "Patient.gender"),
    ({"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]}, "Patient.contained[0]"),
    ({"resourceType": "Patient", "text": {"status": "generated", "div": "<p>x</p>"}}, "Patient.text.div"),
    ({"resourceType": "Patient", "text": {"status": "generated", "div": "<div>"}}, "Patient.text.div"),
    ({"resourceType": "Patient", "id": "bad\x00char"}, "Patient.id"),
    ({"resourceType": "Nope"}, "Nope"),
])
def test_writer_rejects_what_xml_cannot_represent(resource: dict, expression: str) -> None:
    with pytest.raises(FhirError) as caught:
        resource_to_xml(resource)
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == (expression,)
