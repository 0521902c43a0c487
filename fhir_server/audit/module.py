"""Wires the audit trail into the server: every interaction on patient data is recorded as
BALP / TDE AuditEvents — writes in the same transaction as the data, reads, searches, history and
operations before the response is sent, refusals (401/403/404) too. AuditEvents are immutable;
`Patient/[id]/$access-history` gives the patient the record of who looked."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from fhir_server.access.policy import is_invisible_to_patient
from fhir_server.audit.capability import amend_capability_statement
from fhir_server.audit.immutable import refuse_change
from fhir_server.audit.record import AuditRecord
from fhir_server.audit.trail import AUDIT_INDEXES, AuditChainConflict, AuditTrail
from fhir_server.engine.errors import FhirError, error, transient
from fhir_server.engine.interactions import WriteEvent
from fhir_server.engine.model import RequestContext, Result
from fhir_server.engine.operations import Operation, OperationCall

if TYPE_CHECKING:
    from fhir_server.server import AccessEvent, FhirServer

NOT_AUDITED_OPERATIONS = frozenset({"validate", "expand", "validate-code", "lookup"})
STATUS_OF_WRITE = {"create": 201}
RETRY_AFTER_SECONDS = 1
T = TypeVar("T")


def install(server: FhirServer) -> None:
    trail = AuditTrail(server.store, server.search_registry, server.policy)
    server.audit = trail
    server.extra_indexes.setdefault("AuditEvent", []).extend(AUDIT_INDEXES)
    auditor = Auditor(server, trail)
    server.interactions.write_rules.append(auditor.refuse_changes)
    server.search_rules.append(require_date_on_wide_audit_searches)
    server.capability_amendments.append(amend_capability_statement)     # says both rules above
    server.interactions.create_overrides["AuditEvent"] = auditor.receive
    if os.environ.get("FHIR_AUDIT", "on").lower() == "off":      # benchmarks only: audit on vs off
        return
    server.interactions.write_hooks.append(auditor.on_write)
    server.access_observers.append(auditor.on_access)
    server.operations.register(Operation(
        name="access-history", handler=auditor.access_history, resource_types=("Patient",), type_level=False,
        instance=True, definition="https://espace.example.org/fhir/OperationDefinition/Patient-access-history",
        documentation="Who accessed the patient's record: newest first, paged, _since, exclude-self"))


class Auditor:
    def __init__(self, server: FhirServer, trail: AuditTrail) -> None:
        self.server = server
        self.trail = trail

    # -- writes -------------------------------------------------------------------------------
    def refuse_changes(self, event: WriteEvent) -> None:
        refuse_change(event.resource_type, event.interaction)

    def receive(self, resource: dict, ctx: RequestContext, session: Any) -> Result:
        """`POST AuditEvent` (the TDE / ITI-20 feed): chained like the server's own events."""
        if ctx.access is not None and ctx.access.actor is not None and ctx.access.actor.kind != "system":
            raise error(403, "forbidden", "Only a trusted system may feed AuditEvents")
        event_id = audited(lambda: self.trail.append(resource, session))
        stored = self.server.store.get("AuditEvent", event_id, session)
        result = Result(201, stored["resource"], "1", stored["_lastUpdated"])
        result.location = f"AuditEvent/{event_id}/_history/1"
        return result

    def on_write(self, event: WriteEvent) -> None:
        access = event.ctx.access
        # in this transaction the written resource carries event.acl (a deleted one is gone)
        written = f"{event.resource_type}/{event.resource_id}"
        known_invisible = {written: event.new is not None and is_invisible_to_patient(event.acl)}
        record = AuditRecord(
            event.interaction, STATUS_OF_WRITE.get(event.interaction, 200),
            actor=access.actor if access else None,
            resource_type=event.resource_type, resource_id=event.resource_id, version=event.version,
            patients=list((event.acl or {}).get("patients", [])),
            data_titles=_titles([event.new or event.old or {}]),
            emergency=bool(access and access.actor and access.actor.is_emergency),
            actor_patients=list(access.patients) if access else [],
            known_invisible=known_invisible,
        )
        audited(lambda: self.trail.record(record, event.session))

    # -- reads, searches, operations, refusals --------------------------------------------------
    def on_access(self, event: AccessEvent) -> None:
        if event.operation in NOT_AUDITED_OPERATIONS:
            return
        access = event.ctx.access
        actor = access.actor if access else None
        resources = _resources_of(event.body)
        data_patients = {_reference(r): self._patients_of(r) for r in resources}
        patients = sorted({p for ps in data_patients.values() for p in ps})
        consent_denied, consent_references = False, []
        if event.error is not None and event.interaction in ("read", "vread") and event.status == 404:
            patients, consent_denied, consent_references = self._hidden(event)
        elif event.compartment and event.compartment[0] == "Patient" and not patients:
            patients = [f"Patient/{event.compartment[1]}"]
        elif event.resource_type == "Patient" and event.resource_id and not patients:
            patients = [f"Patient/{event.resource_id}"] if event.status < 400 or access is None else []
        record = AuditRecord(
            event.interaction, event.status, actor=actor,
            resource_type=event.resource_type, resource_id=event.resource_id, version=event.version,
            query=_query_text(event) if event.interaction.startswith(("search", "history", "operation")) else None,
            patients=patients,
            data_references=[r for r in data_patients if r != _addressed(event)],
            data_patients=data_patients,
            data_titles=_titles(resources),
            diagnostics="; ".join(i.diagnostics for i in event.error.issues) if event.error else None,
            emergency=bool(actor and actor.is_emergency),
            consent_denied=consent_denied, consent_references=consent_references,
            actor_patients=list(access.patients) if access else [],
            known_invisible=_known_invisible(event),
        )
        audited(lambda: self.trail.record(record))
        notifier = getattr(self.server, "notifier", None)
        # on a hidden 404 `patients` are those of the hidden resource: no access happened
        if notifier is not None and event.error is None and event.status < 400 and actor is not None:
            for patient in patients:
                notifier.on_access(patient, actor, actor.is_emergency or bool(access and access.emergency_used))

    def _patients_of(self, resource: dict) -> list[str]:
        resource_type = resource.get("resourceType", "")
        return self.server.policy.patients_of(resource_type, resource,
                                              lambda: self.server.search_registry.extract_index(resource))

    def _hidden(self, event: AccessEvent) -> tuple[list[str], bool, list[str]]:
        """A read answered 404: if the resource exists but the decision hid it, the refusal is a
        consent/access denial, recorded against its patients."""
        # only a resource type names a collection (`/.well-known/...` or a typo is not one)
        known = event.resource_type in self.server.search_registry.known_types
        doc = self.server.store.get(event.resource_type, event.resource_id) if known and event.resource_id else None
        if doc is None or not doc.get("_acl"):
            return [], False, []
        patients = list(doc["_acl"]["patients"])
        states = self.server.store.get_metas([f"consent:{patient}" for patient in patients])
        consents = [c for patient in patients for c in states.get(f"consent:{patient}", {}).get("consents", [])]
        return patients, True, consents

    def access_history(self, call: OperationCall) -> Result:
        access = call.ctx.access
        patient = f"Patient/{call.resource_id}"
        actor = access.actor if access else None
        allowed = actor is not None and (actor.kind in ("auditor", "system") or
                                         (actor.kind == "patient" and patient in access.patients))
        if not allowed:
            raise error(403, "forbidden", "Only the patient (or an auditor) may read the record's access history")
        where = self.server.interactions.read_filter(call.ctx, "AuditEvent")
        return Result(200, self.trail.access_history(patient, call.arguments, call.ctx.base_url, where))


def audited(write: Callable[[], T]) -> T:
    """Run an audit write; when the chain stayed too busy to take the event, fail the request as
    transient (503 + Retry-After): the client retries, and no data leaves unaudited."""
    try:
        return write()
    except AuditChainConflict as exc:
        raise audit_busy() from exc


def audit_busy() -> FhirError:
    return transient("The audit trail of this record is busy and the access could not be recorded, so it was not "
                     f"performed; retry in {RETRY_AFTER_SECONDS} second(s)", RETRY_AFTER_SECONDS)


PATIENT_SCOPED = frozenset({"patient", "entity", "_id", "patient:identifier", "entity:identifier"})


def require_date_on_wide_audit_searches(ctx: RequestContext, resource_type: str, params: list[tuple[str, str]]) -> None:
    """TDE: an AuditEvent search that is not about one patient or entity must bound `date`."""
    if resource_type != "AuditEvent":
        return
    names = {name.split(".")[0] for name, _ in params}
    if not names & PATIENT_SCOPED and not any(name.startswith("date") for name in names):
        raise error(400, "required", "An AuditEvent search not restricted to a patient or entity must give a "
                    "`date` range (TDE rule), e.g. date=ge2026-01-01", "date")


def _resources_of(body: dict | None) -> list[dict]:
    if not body:
        return []
    if body.get("resourceType") == "Bundle":
        return [e["resource"] for e in body.get("entry", []) or []
                if isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") != "OperationOutcome"]
    if body.get("resourceType") in ("OperationOutcome", "CapabilityStatement", "Parameters"):
        return []
    return [body]


def _known_invisible(event: AccessEvent) -> dict[str, bool]:
    """A read of the current version brings that version's access data with it (see
    RequestContext.read_acls), and a search those of its matches (found_acls): the trail need
    not look them up again. Only for what was read just now: an earlier read of the same request
    may predate a write of it."""
    if event.interaction.startswith("search") and event.error is None:
        return {reference: is_invisible_to_patient(acl) for reference, acl in event.ctx.found_acls.items()}
    reference = _addressed(event)
    if event.interaction != "read" or event.error is not None or reference not in event.ctx.read_acls:
        return {}
    return {reference: is_invisible_to_patient(event.ctx.read_acls[reference])}


def _reference(resource: dict) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _addressed(event: AccessEvent) -> str | None:
    return f"{event.resource_type}/{event.resource_id}" if event.resource_id else None


def _titles(resources: list[dict]) -> dict[str, str]:
    titles = {}
    for resource in resources:
        if resource.get("resourceType") != "DocumentReference":
            continue
        title = resource.get("description") or next(
            (c.get("attachment", {}).get("title") for c in resource.get("content", []) or []
             if c.get("attachment", {}).get("title")), None)
        if not title:
            title = (resource.get("type") or {}).get("text") or next(
                (c.get("display") for c in (resource.get("type") or {}).get("coding", []) if c.get("display")), None)
        if title:
            titles[_reference(resource)] = title
    return titles


def _query_text(event: AccessEvent) -> str:
    head = event.resource_type or ""
    if event.compartment:
        head = f"{event.compartment[0]}/{event.compartment[1]}/{head}"
    if event.operation:
        head = f"{head}/${event.operation}".lstrip("/")
    return f"{head}?{urlencode(event.query)}" if event.query else head
