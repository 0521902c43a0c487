"""Serving the conformance resources: at start-up, our profiles, extensions, value sets, code
systems, search parameters, the resources of the IG packages the server was started with, and the
ImplementationGuide are upserted into the store, so that `GET [base]/StructureDefinition?url=...`,
reads by id and the rest of the REST API work on them like on any resource. Unchanged resources
are left alone (no new version at every start).

Set `FHIR_PUBLISH_CONFORMANCE=off` to skip it (a test database that never reads them: publishing
~120 resources costs about a second on the embedded test database).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from fhir_server.definitions import Definitions
from fhir_server.engine.errors import FhirError
from fhir_server.engine.model import RequestContext
from fhir_server.ig.guide import implementation_guide

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

log = logging.getLogger(__name__)
PUBLISH_ENV = "FHIR_PUBLISH_CONFORMANCE"


def published_resources(definitions: Definitions) -> list[dict]:
    """Everything the server publishes, with an id (a resource without one cannot be upserted).
    StructureDefinitions are served as authored, without the snapshot the server generated: it
    multiplies their size by twenty (4 MB for ours) and clients get it from
    `StructureDefinition/[id]/$snapshot`."""
    resources = [*definitions.packaged, *definitions.local, implementation_guide(definitions)]
    return [as_authored(r) for r in resources if isinstance(r.get("id"), str)]


def as_authored(resource: dict) -> dict:
    """A differential StructureDefinition without its generated snapshot; anything else as is."""
    if resource.get("resourceType") == "StructureDefinition" and resource.get("differential"):
        return {k: v for k, v in resource.items() if k != "snapshot"}
    return resource


def publishing_enabled(environ: dict[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get(PUBLISH_ENV, "on")
    return value.strip().lower() not in ("off", "0", "false", "no")


class ConformancePublisher:
    """Startup hook: upsert the published conformance resources; returns how many were written."""

    def __init__(self, server: FhirServer) -> None:
        self.server = server

    def __call__(self) -> int:
        if not publishing_enabled():
            return 0
        base_url = self.server.settings.base_url or "http://localhost/fhir"
        ctx = RequestContext(base_url=base_url, prefer_return="minimal")
        written = 0
        for resource in published_resources(self.server.definitions):
            if not self._unchanged(resource) and self._upsert(resource, ctx):
                written += 1
        if written:
            log.info("published %d conformance resources", written)
        return written

    def _upsert(self, resource: dict, ctx: RequestContext) -> bool:
        try:
            self.server.interactions.update(resource["resourceType"], resource["id"], resource, ctx)
            return True
        except FhirError as exc:
            if exc.status not in (409, 412):
                raise
            # another server instance starting at the same time published it first
            return False

    def _unchanged(self, resource: dict) -> bool:
        current = self.server.store.get(resource["resourceType"], resource["id"])
        if current is None:
            return False
        stored = {k: v for k, v in current["resource"].items() if k != "meta"}
        return stored == {k: v for k, v in resource.items() if k != "meta"}
