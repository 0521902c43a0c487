"""Synthetic resources filled from the R4 StructureDefinitions, so that every element a search
expression may reach carries a value (used to cross-check the compiled expressions)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhir_server.definitions import Definitions

_PRIMITIVES: dict[str, Any] = {
    "string": "Élodie Test", "markdown": "Élodie", "code": "active", "boolean": True,
    "integer": 3, "decimal": Decimal("1.5"), "positiveInt": 2, "unsignedInt": 1,
    "date": "2021-05-04", "dateTime": "2021-05-04T10:30:00+02:00", "instant": "2021-05-04T10:30:00.000Z",
    "time": "10:00:00", "uri": "http://example.org/x", "url": "http://example.org/u",
    "canonical": "http://example.org/c|1.0", "oid": "urn:oid:1.2.3",
    "uuid": "urn:uuid:0a0b0c0d-1111-2222-3333-444455556666",
    "id": "abc", "base64Binary": "AAAA",
}

_SKIP = {"extension", "modifierExtension", "contained", "text", "id"}


def sample_resource(definitions: Definitions, resource_type: str, variant: int = 0, depth: int = 4) -> dict:
    resource = {"resourceType": resource_type, "id": f"{resource_type.lower()}-{variant}"}
    resource.update(_fill(definitions, resource_type, variant, depth))
    return resource


def _fill(definitions: Definitions, path: str, variant: int, depth: int) -> dict:
    out: dict[str, Any] = {}
    children = definitions.children(path)
    choices: dict[str, list[str]] = {}
    for name, info in children.items():
        stem = _choice_stem(name, info.type_code)
        if stem:
            choices.setdefault(stem, []).append(name)
    chosen = {names[variant % len(names)] for names in choices.values()}
    for name, info in children.items():
        if name in _SKIP or (_choice_stem(name, info.type_code) and name not in chosen):
            continue
        value = _value(definitions, info.type_code, info.path, variant, depth)
        if value is None:
            continue
        out[name] = [value] if info.is_array else value
    return out


def _choice_stem(name: str, type_code: str) -> str | None:
    suffix = type_code[0].upper() + type_code[1:]
    if name.endswith(suffix) and len(name) > len(suffix):
        return name[: -len(suffix)]
    return None


def _value(definitions: Definitions, type_code: str, path: str, variant: int, depth: int) -> Any:
    if type_code in _PRIMITIVES:
        return _PRIMITIVES[type_code]
    if type_code == "Reference":
        return {"reference": "Patient/p1", "identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1800"}}
    if type_code == "Coding":
        return {"system": "http://loinc.org", "code": "1234-5", "display": "Hémoglobine"}
    if type_code == "CodeableConcept":
        return {"coding": [{"system": "http://loinc.org", "code": "1234-5", "display": "Hémoglobine"}], "text": "Hémo"}
    if type_code in ("Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity"):
        return {"value": Decimal("5.5"), "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
    if type_code in ("Extension", "Narrative", "Resource", "xhtml", "Meta") or depth <= 0:
        return None
    value = _fill(definitions, path, variant, depth - 1)
    return value or None
