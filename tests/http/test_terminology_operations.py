"""The terminology operations on the local content: `$expand` (filter, count, offset; complete lists,
documented subsets, value sets the server cannot expand), `$validate-code` on value sets and code
systems, `$lookup`; codes of systems the server does not hold are accepted with a message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.config import Settings
from tests.http.conftest import running_app

ESPACE = "https://espace.example.org/fhir/"
NOS = "https://mos.esante.gouv.fr/NOS/"
CLASSES_VS = ESPACE + "ValueSet/document-class"
CLASSES_CS = ESPACE + "CodeSystem/document-class"
TYPES_VS = NOS + "JDV_J07-XdsTypeCode-CISIS/FHIR/JDV-J07-XdsTypeCode-CISIS"
PROFESSIONS = NOS + "TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
UNCLOSED = "http://hl7.org/fhir/StructureDefinition/valueset-unclosed"


@pytest.fixture(scope="module")
def client(mongo_uri: str, settings: Settings, issuer_dir: Path) -> Iterator[TestClient]:
    with running_app(mongo_uri, settings, issuer_dir, {"FHIR_PUBLISH_CONFORMANCE": "on"}) as test_client:
        yield test_client


def parameters(body: dict) -> dict:
    assert body["resourceType"] == "Parameters"
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in body["parameter"]
            if any(k.startswith("value") for k in p)}


def codes(value_set: dict) -> list[str]:
    return [c["code"] for c in value_set["expansion"]["contains"]]


# -- $expand -------------------------------------------------------------------------------------------
def test_expand_a_complete_value_set(client: TestClient) -> None:
    response = client.get("/fhir/ValueSet/$expand", params={"url": CLASSES_VS})
    assert response.status_code == 200
    expansion = response.json()["expansion"]
    assert expansion["total"] == 3 and "extension" not in expansion
    shown = {(c["code"], c["display"]) for c in expansion["contains"]}
    assert ("ivg", "Interruption volontaire de grossesse") in shown


def test_expand_filter_count_offset(client: TestClient) -> None:
    url = "http://hl7.org/fhir/ValueSet/administrative-gender"
    assert codes(client.get("/fhir/ValueSet/$expand", params={"url": url}).json()) == \
        ["female", "male", "other", "unknown"]
    page = client.get("/fhir/ValueSet/$expand", params={"url": url, "count": "2", "offset": "1"}).json()["expansion"]
    assert [c["code"] for c in page["contains"]] == ["male", "other"] and page["total"] == 4 and page["offset"] == 1
    # accents and case do not matter in the filter, as French users type
    filtered = client.get("/fhir/ValueSet/$expand", params={"url": CLASSES_VS, "filter": "GENETIQUE"}).json()
    assert codes(filtered) == ["genetique"] and filtered["expansion"]["total"] == 1
    assert client.get("/fhir/ValueSet/$expand", params={"url": CLASSES_VS, "count": "deux"}).status_code == 400


def test_expand_a_documented_subset_is_marked_unclosed(client: TestClient) -> None:
    expansion = client.get("/fhir/ValueSet/$expand", params={"url": TYPES_VS}).json()["expansion"]
    assert {"url": UNCLOSED, "valueBoolean": True} in expansion["extension"]
    assert "total" not in expansion and "60591-5" in [c["code"] for c in expansion["contains"]]


def test_a_value_set_drawing_on_systems_not_held_cannot_be_expanded(client: TestClient) -> None:
    response = client.get("/fhir/ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/observation-codes"})
    assert response.status_code == 422
    assert "http://loinc.org" in response.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/ValueSet/$expand", params={"url": "https://example.org/vs/inconnu"}).status_code == 404


def test_expand_a_stored_or_posted_value_set(client: TestClient) -> None:
    stored = client.get("/fhir/ValueSet/document-class/$expand")
    assert stored.status_code == 200 and stored.json()["expansion"]["total"] == 3
    posted = {"resourceType": "ValueSet", "status": "draft", "compose": {"include": [
        {"system": CLASSES_CS, "concept": [{"code": "ivg"}]},
        {"system": "http://hl7.org/fhir/administrative-gender", "concept": [{"code": "other"}]}]}}
    response = client.post("/fhir/ValueSet/$expand", json={"resourceType": "Parameters", "parameter": [
        {"name": "valueSet", "resource": posted}]})
    assert response.status_code == 200
    contains = response.json()["expansion"]["contains"]
    assert {(c["code"], c.get("display")) for c in contains} == {
        ("ivg", "Interruption volontaire de grossesse"), ("other", "Other")}


# -- $validate-code ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "result", "message"), [
    ({"url": CLASSES_VS, "system": CLASSES_CS, "code": "psychiatrie"}, True, None),
    ({"url": CLASSES_VS, "system": CLASSES_CS, "code": "cardiologie"}, False, "not in the value set"),
    ({"url": TYPES_VS, "system": "http://loinc.org", "code": "11490-0"}, True, "could not be checked"),
    ({"url": TYPES_VS, "system": "http://loinc.org", "code": "11488-4"}, True, None),
    ({"url": "http://hl7.org/fhir/ValueSet/observation-codes", "system": "http://loinc.org", "code": "8480-6"}, True,
     "could not be checked"),
    ({"url": CLASSES_VS, "system": CLASSES_CS, "code": "ivg", "display": "IVG"}, True, "differs"),
])
def test_validate_code_in_a_value_set(client: TestClient, params: dict, result: bool, message: str | None) -> None:
    response = client.get("/fhir/ValueSet/$validate-code", params=params)
    assert response.status_code == 200
    answer = parameters(response.json())
    assert answer["result"] is result
    assert (message is None and "message" not in answer) or (message and message in answer["message"])


def test_validate_code_with_a_codeable_concept(client: TestClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": CLASSES_VS},
        {"name": "codeableConcept", "valueCodeableConcept": {"coding": [
            {"system": "http://loinc.org", "code": "51969-4"}, {"system": CLASSES_CS, "code": "genetique"}]}}]}
    answer = parameters(client.post("/fhir/ValueSet/$validate-code", json=body).json())
    assert answer["result"] is True and answer["display"] == "Génétique"


@pytest.mark.parametrize(("params", "result", "message"), [
    ({"url": PROFESSIONS, "code": "10"}, True, None),
    ({"url": PROFESSIONS, "code": "99"}, True, "part of"),                  # a documented subset: not refused
    ({"url": CLASSES_CS, "code": "cardiologie"}, False, "not in the code system"),
    ({"url": "http://snomed.info/sct", "code": "91936005"}, True, "not held"),
])
def test_validate_code_in_a_code_system(client: TestClient, params: dict, result: bool, message: str | None) -> None:
    answer = parameters(client.get("/fhir/CodeSystem/$validate-code", params=params).json())
    assert answer["result"] is result
    assert (message is None and "message" not in answer) or (message and message in answer["message"])


def test_validate_code_needs_a_code(client: TestClient) -> None:
    assert client.get("/fhir/ValueSet/$validate-code", params={"url": CLASSES_VS}).status_code == 400


# -- $lookup -------------------------------------------------------------------------------------------------
def test_lookup(client: TestClient) -> None:
    answer = client.get("/fhir/CodeSystem/$lookup", params={"system": PROFESSIONS, "code": "60"})
    assert answer.status_code == 200
    assert parameters(answer.json())["display"] == "Infirmier"
    coded = {"resourceType": "Parameters", "parameter": [{"name": "coding", "valueCoding": {
        "system": CLASSES_CS, "code": "ivg"}}]}
    body = client.post("/fhir/CodeSystem/$lookup", json=coded).json()
    assert parameters(body)["name"] == "Espace sensitive document classes"
    definition = next(p for p in body["parameter"] if p["name"] == "property")
    assert definition["part"][1]["valueString"].startswith("Documents about")


def test_lookup_of_unknown_codes_and_systems(client: TestClient) -> None:
    assert client.get("/fhir/CodeSystem/$lookup", params={"system": CLASSES_CS, "code": "x"}).status_code == 404
    loinc = client.get("/fhir/CodeSystem/$lookup", params={"system": "http://loinc.org", "code": "60591-5"})
    assert loinc.status_code == 200 and "not held" in parameters(loinc.json())["message"]
    assert client.get("/fhir/CodeSystem/$lookup", params={"code": "x"}).status_code == 400
