"""The FHIR definitions the server runs on: the official R4 core package, optional IG packages
(`FHIR_IG_PACKAGES`) and our own conformance resources (`profiles/`, `terminology/`), loaded once
at start.

Our profiles are authored as differentials; their snapshots are generated here, at load, so that
every consumer (the validator, the conformance resources the server serves) sees full
StructureDefinitions. Where an IG package and our folders define the same canonical URL, ours
win: the server enforces the rendition it ships.

Everything generic in the server (structure validation, XML, search, the CapabilityStatement) is
driven from here rather than from hand-written per-resource code.
"""

from __future__ import annotations

import functools
import logging
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from fhir_server.definitions.paths import PROJECT_ROOT, core_package_dir, schema_path

log = logging.getLogger(__name__)

LOCAL_FOLDERS = ("profiles", "terminology")
IG_PACKAGES_ENV = "FHIR_IG_PACKAGES"        # package.tgz paths, os.pathsep-separated

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
    # What this server publishes: our own conformance resources (profiles/, terminology/) and
    # those of the IG packages it was started with, as loaded (snapshots filled in).
    local: list[dict] = field(default_factory=list)
    packaged: list[dict] = field(default_factory=list)

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
        return with_fhir_version_erratum(orjson.loads(schema_path().read_bytes()))

    def search_parameters_for(self, resource_type: str) -> list[dict]:
        return [sp for sp in self.search_parameters
                if resource_type in sp.get("base", []) or "Resource" in sp.get("base", [])
                or ("DomainResource" in sp.get("base", []) and resource_type not in ("Bundle", "Binary", "Parameters"))]


def with_fhir_version_erratum(schema: dict) -> dict:
    """The official R4 JSON schema (generated before the 4.0.1 technical correction) lists FHIR
    versions up to 4.0.0 only, so every `fhirVersion` of "4.0.1" (StructureDefinition,
    ImplementationGuide, CapabilityStatement...) fails it: add the version the server runs."""
    for definition in schema.get("definitions", {}).values():
        prop = (definition.get("properties") or {}).get("fhirVersion") if isinstance(definition, dict) else None
        if not isinstance(prop, dict):
            continue
        target = prop.get("items", prop)
        if isinstance(target.get("enum"), list) and "4.0.1" not in target["enum"]:
            target["enum"].append("4.0.1")
    return schema


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


def ig_package_paths(value: str | None = None) -> list[Path]:
    """The IG packages to load: `FHIR_IG_PACKAGES` (or `value`), os.pathsep-separated."""
    value = os.environ.get(IG_PACKAGES_ENV, "") if value is None else value
    return [Path(part) for part in value.split(os.pathsep) if part.strip()]


def package_resources(path: Path) -> Iterator[dict]:
    """Conformance resources of a FHIR npm package (`package.tgz`): the JSON files directly under
    `package/` (examples, in `package/example/`, and the package manifests are skipped)."""
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            folder, _, name = member.name.rpartition("/")
            if not member.isfile() or folder != "package" or not name.endswith(".json") \
                    or name in ("package.json", ".index.json"):
                continue
            stream = archive.extractfile(member)
            data = orjson.loads(stream.read()) if stream is not None else None
            if isinstance(data, dict) and data.get("resourceType") in CONFORMANCE_TYPES:
                yield data


def without_overridden(packaged: list[dict], local: list[dict]) -> list[dict]:
    """The package's resources that ours do not replace: same canonical url, or same id (they would
    be stored over each other). Ours win: the server enforces, and serves, the rendition it ships."""
    ours = {(r.get("resourceType"), key, r.get(key)) for r in local for key in ("url", "id") if r.get(key)}
    kept = []
    for resource in packaged:
        kind = resource.get("resourceType")
        if any((kind, key, resource.get(key)) in ours for key in ("url", "id") if resource.get(key)):
            log.info("%s %s of an IG package is replaced by ours", kind, resource.get("url") or resource.get("id"))
        else:
            kept.append(resource)
    return kept


def local_resources(folders: Iterable[str] = LOCAL_FOLDERS) -> Iterator[dict]:
    """Our own conformance resources, as authored (differential StructureDefinitions)."""
    for folder in folders:
        for resource in _iter_json_files(PROJECT_ROOT / folder):
            if resource.get("resourceType") in CONFORMANCE_TYPES:
                yield resource


def fill_snapshots(defs: Definitions, resources: list[dict]) -> list[dict]:
    """Generate the snapshot of every differential-only StructureDefinition among `resources`
    (bases first) and store it in `defs`; returns `resources` with the filled ones. A profile whose
    differential does not apply to its base is kept as is and logged: the validator reports it as
    unusable when a resource claims it, rather than the whole server refusing to start."""
    from fhir_server.validation.snapshot import SnapshotError, ensure_snapshot  # imports Definitions

    done: dict[str, dict] = {}

    def fill(sd: dict) -> dict:
        url = sd.get("url", "")
        if url in done:
            return done[url]
        done[url] = sd                              # a base cycle ends here (and fails below)
        base = defs.structures.get(str(sd.get("baseDefinition", "")).split("|", 1)[0])
        if base is not None and base is not sd and not base.get("snapshot"):
            fill(base)
        try:
            filled = ensure_snapshot(sd, defs)
        except SnapshotError as exc:
            log.warning("%s", exc)
            filled = sd
        defs.structures[url] = done[url] = filled
        return filled

    # a resource overridden by another with the same URL (a package's, by ours) is left alone
    owned = {id(r) for r in resources
             if r.get("resourceType") == "StructureDefinition" and defs.structures.get(r.get("url")) is r}
    return [fill(r) if id(r) in owned else r for r in resources]


@functools.cache
def load_definitions() -> Definitions:
    defs = Definitions()
    _load_core(defs)
    local = list(local_resources())
    packaged = without_overridden([r for path in ig_package_paths() for r in package_resources(path)], local)
    for resource in [*packaged, *local]:            # ours last: they win over a package's
        defs.add(resource)
    defs.packaged = fill_snapshots(defs, packaged)
    defs.local = fill_snapshots(defs, local)
    return defs
