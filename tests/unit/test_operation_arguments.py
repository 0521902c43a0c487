"""An operation reads its simple inputs alike from the URL (GET) and from a Parameters body
(POST): primitive values as the URL would write them, complex ones left to the operation."""

from __future__ import annotations

from decimal import Decimal

from fhir_server.engine.model import RequestContext
from fhir_server.engine.operations import OperationCall, primitive_parameters


def call(params: list[tuple[str, str]], body: object) -> OperationCall:
    return OperationCall("everything", "Patient", "p1", "POST", params, body, RequestContext(base_url="http://x/fhir"))


def test_primitive_values_read_as_the_url_writes_them():
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "_count", "valueInteger": 5}, {"name": "exclude-self", "valueBoolean": True},
        {"name": "strict", "valueBoolean": False}, {"name": "date", "valueDate": "2026-05-01"},
        {"name": "ratio", "valueDecimal": Decimal("0.50")}, {"name": "code", "valueCode": "final"}]}
    assert primitive_parameters(body) == [("_count", "5"), ("exclude-self", "true"), ("strict", "false"),
                                          ("date", "2026-05-01"), ("ratio", "0.50"), ("code", "final")]


def test_complex_values_and_malformed_entries_are_not_arguments():
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": "http://loinc.org", "code": "1"}},
        {"name": "resource", "resource": {"resourceType": "Patient"}}, {"valueString": "no name"}, "junk"]}
    assert primitive_parameters(body) == []
    assert primitive_parameters({"resourceType": "Patient", "id": "p"}) == []
    assert primitive_parameters(None) == []


def test_url_parameters_come_first():
    body = {"resourceType": "Parameters", "parameter": [{"name": "_count", "valueInteger": 5}]}
    assert call([("_count", "2")], body).arguments == [("_count", "2"), ("_count", "5")]
    assert call([("_since", "2026-01-01")], None).arguments == [("_since", "2026-01-01")]
