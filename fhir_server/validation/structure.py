"""Base structural validation against the official FHIR R4 JSON schema.

The schema checks property names, cardinality of arrays, required elements, primitive regexes
and the codes of required bindings on `code` elements. We compile one validator per resource type
with `jsonschema-rs` (about 70x faster than the pure-Python `jsonschema`, see bench/), lazily on
first use. The schema's `ResourceList` (any resource, used by `contained`, `Bundle.entry.resource`,
`Parameters.parameter.resource`) is replaced by a stub so that each validator stays small
(~2 MB instead of ~20 MB); nested resources are validated with their own type's validator.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import jsonschema_rs

from fhir_server.definitions import Definitions
from fhir_server.engine.errors import Issue

_ANY_RESOURCE = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
}
_UNEXPECTED = re.compile(r"\('([^']+)' was unexpected\)|\(([^)]+) were unexpected\)")


class StructureValidator:
    def __init__(self, definitions: Definitions) -> None:
        self._definitions = definitions
        self._schema_definitions: dict | None = None
        self._validators: dict[str, jsonschema_rs.Draft6Validator] = {}
        self._lock = threading.Lock()

    def validate(self, resource: object, expected_type: str | None = None) -> list[Issue]:
        """Return every structural issue of `resource` (empty when valid)."""
        if not isinstance(resource, dict):
            return [Issue("error", "structure", "A FHIR resource must be a JSON object")]
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str) or not self._definitions.is_resource_type(resource_type):
            return [Issue("error", "structure", f"Unknown or missing resourceType: {resource_type!r}",
                          ("resourceType",))]
        if expected_type and resource_type != expected_type:
            return [Issue("error", "invalid",
                          f"resourceType {resource_type} does not match the {expected_type} endpoint",
                          ("resourceType",))]
        return list(self._validate_tree(resource, resource_type))

    def _validate_tree(self, resource: dict, prefix: str) -> Iterator[Issue]:
        resource_type = resource["resourceType"]
        for error in self._validator(resource_type).iter_errors(resource):
            yield _issue(error, prefix)
        for path, nested in _nested_resources(self._definitions, resource, resource_type, prefix):
            nested_type = nested.get("resourceType")
            if not isinstance(nested_type, str) or not self._definitions.is_resource_type(nested_type):
                yield Issue("error", "structure", f"Unknown or missing resourceType: {nested_type!r}",
                            (f"{path}.resourceType",))
                continue
            yield from self._validate_tree(nested, path)

    def _validator(self, resource_type: str) -> jsonschema_rs.Draft6Validator:
        validator = self._validators.get(resource_type)
        if validator is None:
            with self._lock:
                validator = self._validators.get(resource_type)
                if validator is None:
                    validator = jsonschema_rs.Draft6Validator({
                        "$schema": "http://json-schema.org/draft-06/schema#",
                        "allOf": [{"$ref": f"#/definitions/{resource_type}"}],
                        "definitions": self._stubbed_definitions(),
                    })
                    self._validators[resource_type] = validator
        return validator

    def _stubbed_definitions(self) -> dict:
        if self._schema_definitions is None:
            definitions = dict(self._definitions.schema["definitions"])
            definitions["ResourceList"] = _ANY_RESOURCE
            self._schema_definitions = definitions
        return self._schema_definitions


def _nested_resources(definitions: Definitions, node: object, type_path: str, expression: str
                      ) -> Iterator[tuple[str, dict]]:
    """Walk `node` along the type's element definitions and yield resources held in
    Resource-typed elements (contained, Bundle.entry.resource, Parameters.parameter.resource...)."""
    if not isinstance(node, dict):
        return
    children = definitions.children(type_path)
    for name, value in node.items():
        info = children.get(name)
        if info is None or info.type_code in _LEAF_TYPES:
            continue
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            path = f"{expression}.{name}[{index}]" if isinstance(value, list) else f"{expression}.{name}"
            if info.type_code == "Resource":
                if isinstance(item, dict):
                    yield path, item
            elif info.type_code in ("BackboneElement", "Element") or info.path.count(".") > 0:
                yield from _nested_resources(definitions, item, info.path, path)


# Datatypes that can never hold a resource: do not descend into them.
_LEAF_TYPES = frozenset({
    "Extension", "Meta", "Narrative", "Identifier", "CodeableConcept", "Coding", "Reference", "Period",
    "Quantity", "HumanName", "Address", "ContactPoint", "Attachment", "Annotation", "Range", "Ratio",
    "SampledData", "Signature", "Timing", "Dosage", "Money", "Duration", "Age", "Count", "Distance",
    "ContactDetail", "UsageContext", "RelatedArtifact", "DataRequirement", "ParameterDefinition",
    "TriggerDefinition", "Expression", "Contributor", "MarketingStatus", "Population",
    "ProdCharacteristic", "ProductShelfLife", "SubstanceAmount",
})


def _issue(error: jsonschema_rs.ValidationError, prefix: str) -> Issue:
    expression = prefix + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.instance_path
    )
    kind = type(error.kind).__name__
    message = error.message
    if kind == "AdditionalProperties":
        names = getattr(error.kind, "unexpected", None) or []
        if names:
            return Issue("error", "structure",
                         f"Unknown element '{names[0]}' at {expression}: it is not part of the FHIR R4 "
                         "definition of this element", (f"{expression}.{names[0]}",))
    if kind == "Required":
        prop = getattr(error.kind, "property", None)
        if isinstance(prop, str):
            return Issue("error", "required", f"Missing required element '{prop}' at {expression}",
                         (f"{expression}.{prop}",))
    code = {"Enum": "code-invalid", "Pattern": "value", "Type": "structure", "MinItems": "required"}.get(
        kind, "invalid")
    return Issue("error", code, f"{expression}: {message}", (expression,))
