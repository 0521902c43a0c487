"""The FHIR definitions the server runs on: the official R4 core package plus our own conformance
resources (`profiles/`, `terminology/`), loaded once at start.

Everything generic in the server (structure validation, XML, search, the CapabilityStatement) is
driven from here rather than from hand-written per-resource code.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from fhir_server.definitions.paths import PROJECT_ROOT, core_package_dir, schema_path

CONFORMANCE_TYPES = ("StructureDefinition", "SearchParameter", "ValueSet", "CodeSystem",
                     "CompartmentDefinition", "OperationDefinition")

PRIMITIVE_TYPES = frozenset({
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant",
    "integer", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid",
    "xhtml",
})


@dataclass(frozen=True)
class ElementInfo:
    """What the wire formats need to know about one element of a type."""

    name: str              # JSON property name (choice types expanded: valueQuantity)
    type_code: str         # FHIR type code (string, Quantity, BackboneElement, Resource, ...)
    is_array: bool
    path: str              # path in the snapshot used to find children (Observation.component)


@dataclass(eq=False)
class Definitions:
    structures: dict[str, dict] = field(default_factory=dict)        # by canonical url
    search_parameters: list[dict] = field(default_factory=list)
    value_sets: dict[str, dict] = field(default_factory=dict)
    code_systems: dict[str, dict] = field(default_factory=dict)
    compartments: dict[str, dict] = field(default_factory=dict)
    operations: dict[str, dict] = field(default_factory=dict)

    def add(self, resource: dict) -> None:
        kind = resource.get("resourceType")
        url = resource.get("url")
        if kind == "StructureDefinition":
            self.structures[url] = resource
        elif kind == "SearchParameter":
            self.search_parameters.append(resource)
        elif kind == "ValueSet":
            self.value_sets[url] = resource
        elif kind == "CodeSystem":
            self.code_systems[url] = resource
        elif kind == "CompartmentDefinition":
            self.compartments[resource.get("code", url)] = resource
        elif kind == "OperationDefinition":
            self.operations[url] = resource

    # -- types -------------------------------------------------------------------------------
    @functools.cached_property
    def base_types(self) -> dict[str, dict]:
        """Core type name -> its base StructureDefinition (specializations only, no profiles)."""
        return {
            sd["type"]: sd
            for sd in self.structures.values()
            if sd.get("derivation") == "specialization" or sd.get("type") in ("Element", "Resource", "Base")
            if sd["url"] == f"http://hl7.org/fhir/StructureDefinition/{sd['type']}"
        }

    @functools.cached_property
    def resource_types(self) -> list[str]:
        return sorted(
            name for name, sd in self.base_types.items()
            if sd.get("kind") == "resource" and not sd.get("abstract")
        )

    def is_resource_type(self, name: str) -> bool:
        return name in self._resource_type_set

    @functools.cached_property
    def _resource_type_set(self) -> frozenset[str]:
        return frozenset(self.resource_types)

    @functools.cache  # noqa: B019 - one Definitions object per process
    def children(self, type_or_path: str) -> dict[str, ElementInfo]:
        """Direct child elements of a type (`Observation`) or backbone path (`Observation.component`),
        keyed by JSON property name, with choice types expanded."""
        type_name = type_or_path.split(".")[0]
        sd = self.base_types.get(type_name)
        if sd is None:
            return {}
        prefix = type_or_path + "."
        out: dict[str, ElementInfo] = {}
        for element in sd["snapshot"]["element"]:
            path = element["path"]
            if not path.startswith(prefix) or "." in path[len(prefix):]:
                continue
            name = path[len(prefix):]
            is_array = element.get("max") not in ("0", "1")
            types = element.get("type") or []
            if element.get("contentReference"):
                target = element["contentReference"].lstrip("#")
                out[name] = ElementInfo(name, "BackboneElement", is_array, target)
                continue
            if name.endswith("[x]"):
                stem = name[:-3]
                for t in types:
                    code = t["code"]
                    prop = stem + code[0].upper() + code[1:]
                    out[prop] = ElementInfo(prop, code, is_array, code)
                continue
            code = _type_code(types)
            child_path = path if code in ("BackboneElement", "Element") else code
            out[name] = ElementInfo(name, code, is_array, child_path)
        return out

    @functools.cached_property
    def schema(self) -> dict:
        return orjson.loads(schema_path().read_bytes())

    def search_parameters_for(self, resource_type: str) -> list[dict]:
        return [sp for sp in self.search_parameters
                if resource_type in sp.get("base", []) or "Resource" in sp.get("base", [])
                or ("DomainResource" in sp.get("base", []) and resource_type not in ("Bundle", "Binary", "Parameters"))]


def _type_code(types: list[dict]) -> str:
    if not types:
        return "Element"
    code = types[0]["code"]
    # primitive `id`-like system types in the snapshot carry a FHIRPath type url
    if code.startswith("http://hl7.org/fhirpath/System."):
        return "string"
    return code


def _iter_json_files(folder: Path) -> Iterable[dict]:
    if not folder.exists():
        return
    for path in sorted(folder.rglob("*.json")):
        data = orjson.loads(path.read_bytes())
        if data.get("resourceType") == "Bundle":
            for entry in data.get("entry", []):
                if "resource" in entry:
                    yield entry["resource"]
        else:
            yield data


def _load_core(defs: Definitions) -> None:
    package = core_package_dir() / "package"
    if not package.exists():
        raise RuntimeError(
            f"The official FHIR R4 definitions are missing in {package}: run `make setup` "
            "(python -m fhir_server.definitions.fetch)"
        )
    for path in package.glob("*.json"):
        if path.name.split("-", 1)[0] in CONFORMANCE_TYPES:
            defs.add(orjson.loads(path.read_bytes()))


@functools.cache
def load_definitions() -> Definitions:
    defs = Definitions()
    _load_core(defs)
    for folder in ("profiles", "terminology"):
        for resource in _iter_json_files(PROJECT_ROOT / folder):
            if resource.get("resourceType") in CONFORMANCE_TYPES:
                defs.add(resource)
    return defs
