"""AuditRecord -> AuditEvent resources (pure: no storage).

The shape follows the IHE BALP patterns (Read / Query / Create / Update / Delete, their Patient*
variants, AuthZconsent) inside the limits of the ANS TDE profile, which wins where they clash:

* TDE allows at most two agents, so an event carries the **user** (requestor, BALP `user` slice)
  and the **client software** (DCM 110150 Application, plus the BALP client role 110152/110153);
  the server is `source.observer` (BALP's `server` agent is what `val-audit-source` ties to the
  observer anyway) and the user's organisation is an extension on the user agent
  (`ORGANIZATION_URL`) instead of a third `userorg` agent.
* TDE allows one subtype: the restful-interaction code, or AuthZ-Consent for a consent denial.
* TDE requires `period.start`: it is the recorded instant.

One event is built per patient concerned, each listing only that patient's data, so that every
patient's trail is complete and never shows another patient's data; without patients a single
event without patient entity is built.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from fhir_server.access.actor import Actor
from fhir_server.audit import codes as c
from fhir_server.audit.record import AuditRecord
from fhir_server.engine.model import instant, new_id

CONSENT_DENIED = "Access refused by the patient's consent"


@dataclass
class BuiltEvent:
    """An AuditEvent ready to be chained: the chain it belongs to is its patient's."""

    patient: str | None        # "Patient/x", or None for the global chain
    resource: dict             # the AuditEvent, without chain extension nor meta.lastUpdated
    self_access: bool          # the patient accessed their own record
    known_invisible: dict[str, bool] = field(default_factory=dict)    # see AuditRecord.known_invisible


def build_events(record: AuditRecord, server_name: str) -> list[BuiltEvent]:
    patients: list[str | None] = [*sorted(set(record.patients))] or [None]
    return [BuiltEvent(patient, build_event(record, patient, server_name), _is_self(record, patient),
                       record.known_invisible)
            for patient in patients]


def build_event(record: AuditRecord, patient: str | None, server_name: str) -> dict:
    """The AuditEvent of `record` for one patient (or for no patient)."""
    when = instant(record.recorded)
    event: dict = {
        "resourceType": "AuditEvent",
        "id": new_id(),
        "meta": {"versionId": "1", "profile": [c.TDE_PROFILE]},
        "type": _event_type(record),
        "subtype": [_subtype(record)],
        "action": "E" if record.consent_denied else record.codes.action,
        "period": {"start": when, "end": when},
        "recorded": when,
        "outcome": outcome_code(record.status),
    }
    description = record.diagnostics or (CONSENT_DENIED if record.consent_denied else None)
    if description:
        event["outcomeDesc"] = description
    event["agent"] = _agents(record, patient)
    event["source"] = _source(server_name)
    event["entity"] = _consent_entities(record, patient) if record.consent_denied else _entities(record, patient)
    return event


def outcome_code(status: int) -> str:
    """audit-event-outcome from the HTTP status: 0 success, 4 minor failure (the client's fault:
    4xx), 8 serious failure (the server's: 5xx), 12 major failure (no answer could be given)."""
    if status <= 0:
        return "12"
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


def _is_self(record: AuditRecord, patient: str | None) -> bool:
    actor = record.actor
    return bool(actor and actor.kind == "patient" and patient and patient in record.actor_patients)


# -- type / subtype -------------------------------------------------------------------------------
def _event_type(record: AuditRecord) -> dict:
    # Break-the-glass and consent refusals are security-relevant events (BALP AuthZconsent type),
    # so that an auditor finds them with a single `type` search.
    return dict(c.SECURITY_ALERT if record.emergency or record.consent_denied else c.REST)


def _subtype(record: AuditRecord) -> dict:
    if record.consent_denied:
        return dict(c.AUTHZ_CONSENT)
    code = record.codes.subtype
    return c.coding(c.RESTFUL_INTERACTION, code, code)


# -- agents ---------------------------------------------------------------------------------------
def _agents(record: AuditRecord, patient: str | None) -> list[dict]:
    user = _user_agent(record, record.actor, patient)
    client = _client_agent(record, requestor=user is None)
    return [agent for agent in (user, client) if agent]


def _user_agent(record: AuditRecord, actor: Actor | None, patient: str | None) -> dict | None:
    """The person behind the request (BALP `user`); software acting alone has none."""
    if actor is None or actor.kind == "system":
        return None
    agent: dict = {}
    if actor.organization:
        structure = {"system": c.STRUCTURE_SYSTEM, "value": c.structure_id_of_finess(actor.organization)}
        agent["extension"] = [{"url": c.ORGANIZATION_URL,
                               "valueReference": {"type": "Organization", "identifier": structure}}]
    author = record.codes.writes and not record.consent_denied
    agent["type"] = {"coding": [dict(c.AUTHOR if author else c.INFORMATION_RECIPIENT)]}
    if actor.profession:
        agent["role"] = [{"coding": [c.coding(c.PROFESSION_SYSTEM, actor.profession,
                                              c.PROFESSION_DISPLAY.get(actor.profession))]}]
    agent["who"] = _who(record, actor, patient)
    if actor.subject:
        agent["altId"] = actor.subject
    if actor.name:
        agent["name"] = actor.name
    agent["requestor"] = True
    purpose = _purpose(record)
    if purpose:
        agent["purposeOfUse"] = [{"coding": [c.coding(c.ACT_REASON, purpose, c.PURPOSE_DISPLAY.get(purpose))]}]
    return agent


def _who(record: AuditRecord, actor: Actor, patient: str | None) -> dict:
    who: dict = {}
    if actor.kind == "patient" and record.actor_patients:
        # A literal reference lets the patient's own accesses be recognised (and searched with
        # `agent=Patient/x`); the INS identifier stays for readers outside this server.
        who["reference"] = patient if patient in record.actor_patients else record.actor_patients[0]
    if actor.rpps:
        identifier = {"system": c.RPPS_SYSTEM, "value": actor.rpps}
    elif actor.ins:
        identifier = {"system": c.INS_NIR_SYSTEM, "value": actor.ins}
    elif actor.client_id:
        identifier = {"system": c.CLIENT_ID_SYSTEM, "value": actor.client_id}
    else:
        identifier = {"system": c.TOKEN_SUBJECT_SYSTEM, "value": actor.subject}
    who["identifier"] = identifier
    who["display"] = actor.name or identifier["value"]
    return who


def _purpose(record: AuditRecord) -> str | None:
    # An emergency access is recorded as ETREAT even if the token said otherwise: the trail must
    # say why the patient's restrictions were bypassed.
    if record.emergency:
        return "ETREAT"
    return record.actor.purpose_of_use if record.actor else None


def _client_agent(record: AuditRecord, requestor: bool) -> dict:
    """The software that sent the request (DCM 110150 Application + the BALP client role)."""
    software = record.software
    agent: dict = {"type": {"coding": [dict(c.APPLICATION), *_client_roles(record)]}}
    if software:
        agent["who"] = {"identifier": {"system": c.CLIENT_ID_SYSTEM, "value": software}, "display": software}
    else:
        agent["who"] = {"display": "unidentified client software"}    # TDE: agent.who 1..1
    agent["requestor"] = requestor
    if record.source_address:
        agent["network"] = {"address": record.source_address, "type": "2"}       # 2 = IP address
    if requestor and not record.consent_denied:
        purpose = _purpose(record)
        if purpose:
            agent["purposeOfUse"] = [{"coding": [c.coding(c.ACT_REASON, purpose, c.PURPOSE_DISPLAY.get(purpose))]}]
    return agent


def _client_roles(record: AuditRecord) -> list[dict]:
    """BALP's DICOM role of the client: Destination (110152) when data flows to it (reads),
    Source (110153) when it sends the request data (queries, writes); Delete and AuthZconsent
    use Application (110150) alone."""
    if record.consent_denied or record.interaction == "delete":
        return []
    return [dict(c.DESTINATION_ROLE if record.codes.action == "R" else c.SOURCE_ROLE)]


def _source(server_name: str) -> dict:
    return {
        "site": server_name,
        "observer": {"type": "Device", "identifier": {"system": c.SERVER_SYSTEM, "value": server_name},
                     "display": server_name},
        "type": [dict(c.APPLICATION_SERVER)],
    }


# -- entities -------------------------------------------------------------------------------------
def _entities(record: AuditRecord, patient: str | None) -> list[dict]:
    entities = [patient_entity(patient)] if patient else []
    entities += [_data_entity(ref, record) for ref in _data_of(record, patient)]
    if record.query:
        entities.append(_query_entity(record.query))
    if record.request_id:
        entities.append({"what": {"identifier": {"value": record.request_id}}, "type": dict(c.ENTITY_REQUEST_ID)})
    return entities


def _consent_entities(record: AuditRecord, patient: str | None) -> list[dict]:
    """BALP AuthZconsent slices entities closed on patient / consent / token: the refused data
    is named in outcomeDesc only."""
    entities = [patient_entity(patient)] if patient else []
    for reference in dict.fromkeys(record.consent_references):
        entities.append({"what": {"reference": reference}, "type": dict(c.ENTITY_CONSENT)})
    return entities


def patient_entity(patient: str) -> dict:
    return {"what": {"reference": patient}, "type": dict(c.ENTITY_PERSON), "role": dict(c.ROLE_PATIENT)}


def _data_of(record: AuditRecord, patient: str | None) -> list[str]:
    """References touched that belong to `patient`: the addressed resource (with its version),
    then the other references, each resource once."""
    candidates: list[str] = []
    if record.resource_type and record.resource_id:
        primary = f"{record.resource_type}/{record.resource_id}"
        candidates.append(f"{primary}/_history/{record.version}" if record.version is not None else primary)
    candidates += [ref for ref in record.data_references if _belongs(record, ref, patient)]
    chosen: dict[str, str] = {}
    for reference in candidates:
        chosen.setdefault(base_reference(reference), reference)
    return list(chosen.values())


def _belongs(record: AuditRecord, reference: str, patient: str | None) -> bool:
    owners = record.data_patients.get(reference)
    if owners is None:
        owners = record.data_patients.get(base_reference(reference))
    return owners is None or not owners or patient is None or patient in owners


def _data_entity(reference: str, record: AuditRecord) -> dict:
    resource_type = reference.split("/", 1)[0]
    entity: dict = {
        "what": {"reference": reference},
        "type": dict(c.ENTITY_SYSTEM_OBJECT),
        "role": dict(c.ROLE_REPORT if resource_type in c.REPORT_TYPES else c.ROLE_DOMAIN_RESOURCE),
    }
    title = record.data_titles.get(reference) or record.data_titles.get(base_reference(reference))
    if title:
        entity["name"] = title
    return entity


def _query_entity(query: str) -> dict:
    # BALP Query: what 0..0, query 1..1 (base64Binary); the readable form goes in description.
    return {"type": dict(c.ENTITY_SYSTEM_OBJECT), "role": dict(c.ROLE_QUERY), "description": query,
            "query": base64.b64encode(query.encode("utf-8")).decode("ascii")}


def base_reference(reference: str) -> str:
    """"Type/id/_history/3" -> "Type/id"."""
    return "/".join(reference.split("/")[:2])
