"""The ImplementationGuide resource: its source `ig/ImplementationGuide-espace.json` (metadata,
groupings, pages) with `definition.resource` computed from what the server really publishes, so
that the guide can never miss a profile, extension, value set, code system, search parameter or
operation."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson

from fhir_server.definitions import Definitions
from fhir_server.definitions.paths import PROJECT_ROOT
from fhir_server.loader import example_files, read_resource

IG_DIR = PROJECT_ROOT / "ig"
IG_SOURCE = IG_DIR / "ImplementationGuide-espace.json"
EXAMPLES_DIR = PROJECT_ROOT / "examples"


def grouping_of(resource: dict) -> str:
    """The IG grouping a conformance resource is listed under."""
    kind = resource.get("resourceType")
    if kind == "StructureDefinition":
        if resource.get("type") == "Extension":
            return "extensions"
        return "profiles" if resource.get("kind") == "resource" else "datatypes"
    if kind in ("CodeSystem", "ValueSet"):
        return "terminology"
    if kind == "SearchParameter":
        return "search"
    if kind == "OperationDefinition":
        return "operations"
    return "other"


def published_by_us(definitions: Definitions) -> list[dict]:
    """Our own conformance resources that have an id, ordered by grouping, type and id."""
    ours = [r for r in definitions.local if r.get("id")]
    return sorted(ours, key=lambda r: (grouping_of(r), r["resourceType"], r["id"]))


def example_resources(folder: Path = EXAMPLES_DIR) -> list[tuple[Path, dict]]:
    return [(path, read_resource(path)) for path in example_files([folder])]


def implementation_guide(definitions: Definitions, source: Path = IG_SOURCE,
                         examples: Path = EXAMPLES_DIR) -> dict:
    """The ImplementationGuide with every resource we publish and every example (with the profile
    it illustrates)."""
    guide = copy.deepcopy(orjson.loads(source.read_bytes()))
    entries = [_entry(r) for r in published_by_us(definitions)]
    for _, example in example_resources(examples):
        if example.get("id"):
            entries.append(_example_entry(example))
    guide.setdefault("definition", {})["resource"] = entries
    return guide


def _entry(resource: dict) -> dict:
    entry = {"reference": {"reference": f"{resource['resourceType']}/{resource['id']}"},
             "name": resource.get("title") or resource.get("name") or resource["id"]}
    if resource.get("description"):
        entry["description"] = _first_sentence(resource["description"])
    entry["exampleBoolean"] = False
    entry["groupingId"] = grouping_of(resource)
    return entry


def _example_entry(example: dict) -> dict:
    entry = {"reference": {"reference": f"{example['resourceType']}/{example['id']}"},
             "name": f"Exemple {example['resourceType']}/{example['id']}"}
    profiles = (example.get("meta") or {}).get("profile") or []
    if profiles:
        entry["exampleCanonical"] = profiles[-1]      # the most specific profile comes last
    else:
        entry["exampleBoolean"] = True
    entry["groupingId"] = "examples"
    return entry


def _first_sentence(text: str) -> str:
    sentence = text.split(". ", 1)[0].strip()
    return sentence if sentence.endswith(".") else sentence + "."


def refresh_source(definitions: Definitions, source: Path = IG_SOURCE, examples: Path = EXAMPLES_DIR) -> bool:
    """Rewrite the resource list of the committed ImplementationGuide; True when it changed."""
    guide = implementation_guide(definitions, source, examples)
    text = orjson.dumps(guide, option=orjson.OPT_INDENT_2).decode() + "\n"
    if source.read_text(encoding="utf-8") == text:
        return False
    source.write_text(text, encoding="utf-8")
    return True
