"""What the engine tells the audit trail about one interaction: an `AuditRecord`.

It is plain data, independent of HTTP and of FHIR structures, so the engine fills it from what it
already knows (the actor, the resources touched, the status it answers) and the audit package
turns it into AuditEvents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from fhir_server.access.actor import Actor
from fhir_server.engine.model import now


@dataclass(frozen=True)
class InteractionCodes:
    subtype: str        # http://hl7.org/fhir/restful-interaction code
    action: str         # AuditEvent.action: C R U D E
    writes: bool        # the user is the author of the change (BALP DataSources) rather than a recipient


# BALP: reads are R, searches E, writes C/U/D. History of one instance is a read of that resource;
# history of a type or the whole system behaves like a query. R4 has no `search-compartment` code:
# the abstract `search` (in BALP AllSearchVS) stands for it.
INTERACTIONS: dict[str, InteractionCodes] = {
    "read": InteractionCodes("read", "R", False),
    "vread": InteractionCodes("vread", "R", False),
    "search-type": InteractionCodes("search-type", "E", False),
    "search-system": InteractionCodes("search-system", "E", False),
    "search-compartment": InteractionCodes("search", "E", False),
    "history-instance": InteractionCodes("history-instance", "R", False),
    "history-type": InteractionCodes("history-type", "E", False),
    "history-system": InteractionCodes("history-system", "E", False),
    "create": InteractionCodes("create", "C", True),
    "update": InteractionCodes("update", "U", True),
    "patch": InteractionCodes("patch", "U", True),
    "delete": InteractionCodes("delete", "D", True),
    "operation": InteractionCodes("operation", "E", False),
    "transaction": InteractionCodes("transaction", "E", True),
    "batch": InteractionCodes("batch", "E", True),
}

SEARCHES = frozenset({"search-type", "search-system", "search-compartment"})


@dataclass
class AuditRecord:
    """One interaction as seen by the engine, before it becomes AuditEvents."""

    interaction: str                       # a key of INTERACTIONS
    status: int                            # HTTP status answered (0: aborted before any answer)
    actor: Actor | None = None
    resource_type: str | None = None       # the resource (or type) the interaction addressed
    resource_id: str | None = None
    version: str | int | None = None       # version read / written, for `what` references
    query: str | None = None               # searches: "DocumentReference?patient=Patient/1&status=current"
    # Patients concerned: for reads and writes the resource's patients, for searches the patients
    # whose data came back. One AuditEvent is written per patient.
    patients: list[str] = field(default_factory=list)
    # Everything touched, as "Type/id" or "Type/id/_history/n", besides the addressed resource.
    data_references: list[str] = field(default_factory=list)
    # Optional readable names for the patient's access history (document title or type display).
    data_titles: dict[str, str] = field(default_factory=dict)
    # Which patients each touched reference belongs to, so a search spanning several patients
    # never lists one patient's data in another patient's AuditEvent. A reference missing from
    # this map belongs to every patient of the record; an empty list marks reference data
    # (Practitioner, Organization...) that may appear in every AuditEvent.
    data_patients: dict[str, list[str]] = field(default_factory=dict)
    diagnostics: str | None = None         # outcome diagnostics (OperationOutcome text on failure)
    emergency: bool = False                # break-the-glass access was used for this request
    consent_denied: bool = False           # refused because of the patient's consent
    consent_references: list[str] = field(default_factory=list)   # "Consent/id" that decided
    client_id: str | None = None           # the software; defaults to actor.client_id
    request_id: str | None = None          # X-Request-Id
    source_address: str | None = None      # client IP address
    # For a patient actor, the Patient resources they are (RequestAccess.patients): marks the
    # patient's own accesses, which the access history can leave out.
    actor_patients: list[str] = field(default_factory=list)
    recorded: datetime = field(default_factory=now)
    # What the engine already knows, by "Type/id", of whether a touched resource is invisible to
    # its patient (INVISIBLE_PATIENT, from its `_acl`): the audit trail then does not look it up
    # again to decide whether the patient may read the AuditEvent.
    known_invisible: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.interaction not in INTERACTIONS:
            raise ValueError(f"unknown interaction {self.interaction!r}; expected one of {sorted(INTERACTIONS)}")

    @property
    def codes(self) -> InteractionCodes:
        return INTERACTIONS[self.interaction]

    @property
    def software(self) -> str | None:
        return self.client_id or (self.actor.client_id if self.actor else None)
