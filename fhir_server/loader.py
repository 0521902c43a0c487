"""Loads example resources and bundles from folders into a running server's engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fhir_server.engine.model import RequestContext
from fhir_server.formats.json import parse_json

if TYPE_CHECKING:
    from fhir_server.server import FhirServer


def example_files(folders: list[Path]) -> Iterator[Path]:
    for folder in folders:
        if folder.is_file():
            yield folder
        elif folder.exists():
            yield from sorted(p for p in folder.rglob("*") if p.suffix in (".json", ".xml"))


def read_resource(path: Path) -> dict:
    if path.suffix == ".xml":
        from fhir_server.formats.xml import xml_to_resource

        return xml_to_resource(path.read_bytes())
    return parse_json(path.read_bytes())


def load(server: FhirServer, folders: list[Path], base_url: str) -> int:
    """Load every resource; resources with an id are upserted (and left alone when unchanged),
    batch/transaction bundles are processed. Returns the number of files loaded."""
    ctx = RequestContext(base_url=base_url, prefer_return="minimal")
    count = 0
    for path in example_files(folders):
        resource = read_resource(path)
        if resource.get("resourceType") == "Bundle" and resource.get("type") in ("batch", "transaction"):
            server.bundles.process(resource, ctx)
        elif "id" in resource:
            if not _unchanged(server, resource):
                server.interactions.update(resource["resourceType"], resource["id"], resource, ctx)
        else:
            server.interactions.create(resource["resourceType"], resource, ctx)
        count += 1
    return count


def _unchanged(server: FhirServer, resource: dict) -> bool:
    current = server.store.get(resource["resourceType"], resource["id"])
    if current is None:
        return False
    stored = {k: v for k, v in current["resource"].items() if k != "meta"}
    given = {k: v for k, v in resource.items() if k != "meta"}
    return stored == given
