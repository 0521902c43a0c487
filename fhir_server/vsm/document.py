"""`Composition/[id]/$document`: the Composition as a FHIR document.

The document Bundle (type `document`, a fresh `identifier`, `timestamp`) holds the Composition
first, then every resource it references (subject, authors, attesters, custodian, encounter,
section entries...) and, transitively, what those reference (a practitioner, a medication...),
each with its full URL on this server so that the relative references inside resolve. Resources
of another patient's record are never pulled in. Every resource is read as the caller: a direct
reference the caller may not read makes the document impossible (422) rather than silently
incomplete.

`persist=true` (POST only, it changes state) stores the Bundle and shares it in the patient's
space as a DocumentReference (contentType application/fhir+json, url `Bundle/[id]`), which
supersedes the previous current summary (see `sharing.py`). The answer is the Bundle, as stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fhir_server.engine.errors import error, not_allowed, unprocessable
from fhir_server.engine.model import RequestContext, Result, instant, now
from fhir_server.engine.operations import OperationCall
from fhir_server.formats.json import dump_json
from fhir_server.vsm import sharing
from fhir_server.vsm.rules import PatientsOf, literal
from fhir_server.vsm.sections import VSM_TITLE, is_vsm

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

FHIR_JSON = "application/fhir+json"
MAX_RESOURCES = 2000
PAGE_SIZE = 1000                  # ids per `_id=` search


class DocumentOperation:
    def __init__(self, server: FhirServer, patients_of: PatientsOf) -> None:
        self.server = server
        self.patients_of = patients_of

    def operation(self, call: OperationCall) -> Result:
        persist = _flag(call, "persist")
        if persist and call.method == "GET":
            raise not_allowed("$document with persist=true stores the document: invoke it with POST")
        composition = self.server.interactions.read("Composition", call.resource_id or "", call.ctx).body or {}
        document = self.assemble(composition, call.ctx)
        if persist:
            document = self.persist(document, composition, call.ctx)
        return Result(200, document)

    # -- assembling -------------------------------------------------------------------------------
    def assemble(self, composition: dict, ctx: RequestContext) -> dict:
        subject = literal(composition.get("subject"))
        entries = [self._entry(ctx, composition)]
        for resource in self._referenced(composition, subject, ctx):
            entries.append(self._entry(ctx, resource))
        return {"resourceType": "Bundle",
                "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
                "type": "document", "timestamp": instant(now()), "entry": entries}

    def _referenced(self, composition: dict, subject: str | None, ctx: RequestContext) -> Iterator[dict]:
        """Breadth first: the Composition's references, then theirs. One search per resource type
        and level (`_id=a,b,c`), read as the caller."""
        seen = {f"Composition/{composition['id']}"}
        # relatesTo names other documents (the summary this one replaces): not part of this one
        direct = set(_references({k: v for k, v in composition.items() if k != "relatesTo"}))
        level = sorted(direct - seen)
        seen |= direct
        count = 0
        while level:
            found = self._read_all(level, ctx)
            missing = direct & (set(level) - set(found))
            if missing:
                raise unprocessable(f"The document cannot be built: {', '.join(sorted(missing))} cannot be read "
                                    "(missing, or not visible to you)", "Composition")
            following: set[str] = set()
            for target in sorted(found):
                resource = found[target]
                if not self._belongs(target, resource, subject):
                    continue
                count += 1
                if count > MAX_RESOURCES:
                    raise error(422, "too-costly", f"A document holds at most {MAX_RESOURCES} resources")
                yield resource
                following |= set(_references(resource)) - seen
            seen |= following
            level = sorted(following)

    def _read_all(self, targets: list[str], ctx: RequestContext) -> dict[str, dict]:
        by_type: dict[str, list[str]] = {}
        for target in targets:
            resource_type, _, resource_id = target.partition("/")
            if self.server.definitions.is_resource_type(resource_type):
                by_type.setdefault(resource_type, []).append(resource_id)
        found: dict[str, dict] = {}
        for resource_type, ids in by_type.items():
            for start in range(0, len(ids), PAGE_SIZE):
                params = [("_id", ",".join(ids[start:start + PAGE_SIZE])), ("_count", str(PAGE_SIZE))]
                page = self.server.search_as(ctx, resource_type, params)
                for entry in page.get("entry", ()):
                    resource = entry.get("resource") or {}
                    if (entry.get("search") or {}).get("mode", "match") == "match" and "id" in resource:
                        found[f"{resource_type}/{resource['id']}"] = resource
        return found

    def _belongs(self, target: str, resource: dict, subject: str | None) -> bool:
        """Reference data (practitioners, organisations, medications) or the subject's own record."""
        if target == subject:
            return True
        owners = self.patients_of(target.split("/", 1)[0], resource)
        return not owners or owners == [subject]

    @staticmethod
    def _entry(ctx: RequestContext, resource: dict) -> dict:
        return {"fullUrl": f"{ctx.base_url}/{resource['resourceType']}/{resource['id']}", "resource": resource}

    # -- persisting and sharing ---------------------------------------------------------------------
    def persist(self, document: dict, composition: dict, ctx: RequestContext) -> dict:
        """Store the document Bundle and, for a summary, share it as the patient's current one."""
        with self.server.store.transaction() as session:
            stored = self.server.interactions.create("Bundle", document, ctx, session=session).body or {}
            if is_vsm(composition):
                sharing.share(self.server, sharing.document_reference(_shared(stored, composition)), ctx, session)
        return stored


def _shared(stored: dict, composition: dict) -> sharing.SharedSummary:
    """What the DocumentReference of a persisted summary says, taken from its document Bundle."""
    in_bundle = {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"] for e in stored["entry"]}
    authors = [in_bundle.get(literal(a) or "") or sharing.author_resource(a) for a in composition.get("author") or ()]
    starts = [(e.get("period") or {}).get("start") for e in composition.get("event") or ()]
    started = next((s for s in starts if s), composition.get("date"))
    return sharing.SharedSummary(
        patient=in_bundle[literal(composition["subject"]) or ""], authors=authors,
        custodian=composition.get("custodian") or {}, title=composition.get("title") or VSM_TITLE,
        master_identifier=stored["identifier"],
        attachment=sharing.attachment_of(FHIR_JSON, f"Bundle/{stored['id']}", dump_json(stored),
                                         composition.get("date") or instant(now())),
        period_start=started or instant(now()), related=[{"reference": f"Composition/{composition['id']}"}],
        confidentiality=composition.get("confidentiality") or "N")



def _references(resource: Any) -> Iterator[str]:
    """Every literal `Type/id` reference in a resource (contained ones, urns and URLs of other
    servers excluded)."""
    if isinstance(resource, dict):
        for key, value in resource.items():
            if key == "reference" and isinstance(value, str):
                target = literal({"reference": value})
                if target is not None and not value.startswith(("http://", "https://")):
                    yield target
            elif key != "contained":
                yield from _references(value)
    elif isinstance(resource, list):
        for item in resource:
            yield from _references(item)


def _flag(call: OperationCall, name: str) -> bool:
    return next((v for k, v in call.arguments if k == name), None) == "true"
