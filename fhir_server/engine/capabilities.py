"""The CapabilityStatement, generated from what is really registered: resource types from the
definitions, search parameters from the search registry, operations from the operation registry,
profiles from our `profiles/`. Business modules amend it (`server.capability_amendments`) with
what only they know: interactions their rules refuse, search-parameter combinations they require
(`with_search_combinations`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhir_server import FHIR_VERSION
from fhir_server.definitions import Definitions
from fhir_server.engine.operations import Operation, OperationRegistry
from fhir_server.search.query import RESULT_PARAMETERS_CAPABILITY

if TYPE_CHECKING:
    from fhir_server.search.registry import SearchParam

INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                "search-type"]
SEARCH_TYPES = {"number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"}
SEARCH_COMBINATION = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-search-parameter-combination"


def capability_statement(definitions: Definitions, search_params: dict[str, dict[str, SearchParam]],
                         operations: OperationRegistry, base_url: str, software_version: str) -> dict:
    profiles_by_type: dict[str, list[str]] = {}
    for sd in definitions.structures.values():
        if sd.get("derivation") == "constraint" and sd.get("kind") == "resource" and \
                not sd["url"].startswith("http://hl7.org/fhir/StructureDefinition/"):
            profiles_by_type.setdefault(sd["type"], []).append(sd["url"])
    resources = [_resource_entry(t, search_params.get(t, {}), operations, profiles_by_type.get(t, []), definitions)
                 for t in definitions.resource_types]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "Espace",
        "kind": "instance",
        "software": {"name": "Espace FHIR server", "version": software_version},
        "implementation": {"description": "Espace - espace de santé FHIR R4", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/fhir+xml", "json", "xml"],
        "patchFormat": ["application/json-patch+json", "application/xml-patch+xml", "application/fhir+json",
                        "application/fhir+xml"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "search-system"},
                            {"code": "history-system"}],
            "searchParam": [_search_param(p) for code, p in sorted(search_params.get("Resource", {}).items())]
            + [dict(p) for p in RESULT_PARAMETERS_CAPABILITY],
            "operation": [{"name": op.name, "definition": op.definition} for op in operations.system_level()],
        }],
    }


def _resource_entry(resource_type: str, params: dict[str, SearchParam], operations: OperationRegistry,
                    profiles: list[str], definitions: Definitions) -> dict:
    entry: dict[str, Any] = {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "interaction": [{"code": code} for code in INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "full-support",          # If-None-Match and If-Modified-Since: 304
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "referencePolicy": ["literal", "logical"],
        "searchInclude": ["*"] + sorted(f"{resource_type}:{c}" for c, p in params.items()
                                        if p.type == "reference"),
        "searchParam": [_search_param(p) for _, p in sorted(params.items())],
    }
    if profiles:
        entry["supportedProfile"] = sorted(profiles)
    ops = [{"name": op.name, "definition": _definition_for(op, resource_type, definitions)}
           for op in operations.for_type(resource_type)]
    if ops:
        entry["operation"] = ops
    return entry


def _definition_for(operation: Operation, resource_type: str, definitions: Definitions) -> str:
    """The canonical of the operation's definition for this type. One operation registered for
    several types names one core definition (`ValueSet-validate-code` for ValueSet and CodeSystem);
    where that one does not apply to the type, the core definition of the same code that does
    (`CodeSystem-validate-code`) is the truth."""
    registered = definitions.operations.get(operation.definition)
    if registered is None or _applies_to(registered, resource_type):
        return operation.definition
    return next((url for url, candidate in definitions.operations.items()
                 if candidate.get("code") == operation.name and _applies_to(candidate, resource_type)),
                operation.definition)


def _applies_to(definition: dict, resource_type: str) -> bool:
    return bool({resource_type, "Resource"} & set(definition.get("resource", [])))


def _search_param(param: SearchParam) -> dict:
    out = {"name": param.code, "type": param.type if param.type in SEARCH_TYPES else "special"}
    if param.url:
        out["definition"] = param.url
    return out


# -- amendments ---------------------------------------------------------------------------------------
def amend_resource_entries(statement: dict, types: Collection[str], amend: Callable[[dict], dict]) -> dict:
    """The statement with the resource entries of `types` replaced by `amend(entry)`; the rest is
    shared, not copied (a statement is generated afresh for each request)."""
    return {**statement, "rest": [
        {**rest, "resource": [amend(e) if e.get("type") in types else e for e in rest.get("resource", [])]}
        for rest in statement.get("rest", [])]}


@dataclass(frozen=True)
class SearchCombination:
    """One allowed combination of search parameters of a type: every `required` one is given; any
    other parameter the type declares may be added, except the `excluded` ones."""

    required: tuple[str, ...]
    excluded: frozenset[str] = frozenset()


# The combinations of a type, from the names of the search parameters its entry declares.
Combinations = Callable[[Sequence[str]], Sequence[SearchCombination]]


def with_search_combinations(statement: dict, resource_type: str, combinations: Combinations) -> dict:
    """Declare a business rule on the searches of a type (HAPI, US Core): one
    `capabilitystatement-search-parameter-combination` extension per allowed combination, in order
    (the first is the usual one), its optional parameters spelled out."""
    def amend(entry: dict) -> dict:
        declared = [param["name"] for param in entry.get("searchParam", [])]
        extensions = [_combination_extension(c, declared) for c in combinations(declared)]
        return {**entry, "extension": [*entry.get("extension", []), *extensions]}
    return amend_resource_entries(statement, {resource_type}, amend)


def _combination_extension(combination: SearchCombination, declared: Sequence[str]) -> dict:
    optional = [name for name in declared if name not in combination.required and name not in combination.excluded]
    return {"url": SEARCH_COMBINATION, "extension": [
        *({"url": "required", "valueString": name} for name in combination.required),
        *({"url": "optional", "valueString": name} for name in optional)]}
