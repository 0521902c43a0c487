"""The access decision, compiled into storage filters.

At write time every resource gets an `_acl` sub-document (beside `_index`, in the current
version and in its history version) that denormalises what the decision needs: the patients
whose compartment holds it (`patients`), its authors and the actors the patient authorised
(`authorised`), and deny tokens: `own` from the resource itself (`!masked` for MASQUE_PS,
`!invisible` for INVISIBLE_PATIENT, `class:X` for the access matrix), `consent` from the
patient's Consents (blocked actor keys, `!opposed`, `!masked` for a document a Consent masks,
the emergency rule), and `deny`, their union, which is the only list the read filters test (one
set test per rule instead of two). When a Consent changes, the consent state of that patient is
recomputed and written into every resource of the patient in the same transaction, so a change
takes effect on the next request with no cache to go stale.

At read time the actor's rights become one MongoDB filter over `_acl`, AND-ed into every query
(read, vread, search, includes, totals, history, $everything), so paging and totals cannot leak.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fhir_server.access.actor import Actor
from fhir_server.access.consent import ConsentState, consent_state
from fhir_server.access.identity import (
    FINESS_SYSTEMS,
    INS_SYSTEMS,
    contained_by_id,
    keys_of_reference,
    keys_of_resource,
)
from fhir_server.access.matrix import AccessMatrix
from fhir_server.definitions import Definitions
from fhir_server.engine.errors import FhirError, Issue, error

MASKED_FROM_PROFESSIONALS = "MASQUE_PS"
INVISIBLE_TO_PATIENT = "INVISIBLE_PATIENT"
# deny tokens of `_acl.own` (from the resource) and `_acl.consent` (from the patient's Consents)
MASKED = "!masked"
INVISIBLE = "!invisible"
OPPOSED = "!opposed"
EMERGENCY_REFUSED = "!emergency-refused"
EMERGENCY_ALLOWED = "+emergency-allowed"
NOTHING = {"_id": {"$in": []}}
REFERENCE_DATA = {"_acl.patients": {"$exists": False}}
ACL_SCHEMA = "acl-schema"
ACL_SCHEMA_VERSION = 2            # 2: `_acl.deny`, the union of `own` and `consent`
AUTHORED_ELEMENTS = ("author", "recorder", "asserter", "requester", "performer", "sender", "source", "attester")

# Conformance and directory resources anyone authenticated (or not, for conformance) may read.
CONFORMANCE_TYPES = frozenset({
    "CapabilityStatement", "StructureDefinition", "ImplementationGuide", "SearchParameter", "OperationDefinition",
    "CompartmentDefinition", "ValueSet", "CodeSystem", "ConceptMap", "NamingSystem", "StructureMap",
})

IDENTITY_CACHE_SECONDS = 30
PRIVATE_TO_PARTICIPANTS = frozenset({"Communication"})
IDENTITY_TYPES = frozenset({"Patient", "Practitioner", "PractitionerRole", "Organization"})

Lookup = Callable[[str, list[tuple[str, str]]], list[str]]      # (type, search params) -> ids


@dataclass
class RequestAccess:
    """What the policy computed for one request (kept on the RequestContext)."""

    actor: Actor | None
    keys: list[str] = field(default_factory=list)      # identity keys of a practitioner actor
    patients: list[str] = field(default_factory=list)  # Patient references of a patient actor
    emergency_used: bool = False


class AccessPolicy:
    def __init__(self, definitions: Definitions, store: Any, lookup: Lookup,
                 matrix: AccessMatrix | None = None) -> None:
        self.store = store
        self.lookup = lookup
        self.matrix = matrix or AccessMatrix.load()
        compartment = definitions.compartments.get("Patient", {})
        self.compartment_params: dict[str, list[str]] = {
            r["code"]: list(r.get("param", [])) for r in compartment.get("resource", []) if r.get("param")
        }
        self.compartment_params.setdefault("Patient", [])
        self._identity_cache: dict[tuple, tuple[float, list[str]]] = {}

    # -- write side: the _acl of a resource ---------------------------------------------------
    def acl_for(self, resource_type: str, resource: dict, index: dict, session: Any = None) -> dict | None:
        patients = self.patients_of(resource_type, resource, index)
        if not patients:
            return None
        # Professionals never read AuditEvents, so their consent tokens would be dead weight:
        # skip the consent-state read on the audit hot path.
        state = ConsentState() if resource_type == "AuditEvent" else self._state_of(patients, session)
        labels = _labels(resource)
        own = [f"class:{c}" for c in self.matrix.classes_of(resource)]
        if MASKED_FROM_PROFESSIONALS in labels:
            own.append(MASKED)
        if INVISIBLE_TO_PATIENT in labels:
            own.append(INVISIBLE)
        consent = _consent_tokens(state, f"{resource_type}/{resource.get('id')}")
        acl = {
            "patients": patients,
            "authors": sorted(_authors(resource)),
            "authorised": sorted(state.authorised),
            "own": sorted(own),
            "consent": consent,
            "deny": sorted({*own, *consent}),
        }
        if resource_type in PRIVATE_TO_PARTICIPANTS:
            acl["participants"] = sorted(_participants(resource))
        return acl

    def patients_of(self, resource_type: str, resource: dict, index: dict) -> list[str]:
        if resource_type == "Patient":
            return [f"Patient/{resource.get('id')}"]
        if resource_type == "Bundle" and resource.get("type") == "document":
            return self._document_patients(resource)
        params = self.compartment_params.get(resource_type)
        if not params:
            return []
        values: list[object] = []
        for param in params:
            found = index.get(param)
            values += found if isinstance(found, list) else [found]
        return _patient_refs(values)

    def _document_patients(self, bundle: dict) -> list[str]:
        """A persisted document (e.g. the VSM) belongs to the subject of its Composition. Inside a
        document that subject is usually a `urn:uuid:` entry: the Patient stored under its INS
        when there is one, else the entry's own id."""
        entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
        composition = (entries[0].get("resource") or {}) if entries else {}
        reference = (composition.get("subject") or {}).get("reference")
        if not (isinstance(reference, str) and reference.startswith("urn:")):
            return _patient_refs([reference])
        subject = next((e.get("resource") for e in entries if e.get("fullUrl") == reference), None)
        if not isinstance(subject, dict) or subject.get("resourceType") != "Patient":
            return []
        for identifier in subject.get("identifier") or []:
            if isinstance(identifier, dict) and identifier.get("system") in INS_SYSTEMS and identifier.get("value"):
                stored = self._identified("Patient", INS_SYSTEMS, identifier["value"])
                if stored:
                    return [f"Patient/{i}" for i in stored]
        return [f"Patient/{subject['id']}"] if isinstance(subject.get("id"), str) else []

    def _state_of(self, patients: list[str], session: Any) -> ConsentState:
        merged = ConsentState()
        for patient in patients:
            state = ConsentState.from_document(self.store.get_meta(f"consent:{patient}", session))
            merged.opposed |= state.opposed
            merged.blocked |= state.blocked
            merged.authorised |= state.authorised
            merged.masked |= state.masked
            if state.emergency != "default":
                merged.emergency = state.emergency
        return merged

    def refresh_consent_state(self, patient: str, consents: list[dict], session: Any) -> ConsentState:
        """Recompute a patient's consent state and write it into every resource of the patient
        (current and historical versions)."""
        state = consent_state(consents, self._reference_keys)
        self.store.put_meta(f"consent:{patient}", state.to_document(), session)
        update = _consent_update(_consent_tokens(state, None), sorted(state.authorised))
        for collection in [*self.compartment_params, "_history"]:
            self.store.update_many(collection, {"_acl.patients": patient}, update, session)
        masked = _consent_update(_consent_tokens(state, "masked"))
        for reference in state.masked:
            resource_type, _, resource_id = reference.partition("/")
            if resource_type in self.compartment_params:
                self.store.update_many(resource_type, {"_id": resource_id, "_acl.patients": patient}, masked, session)
                self.store.update_many("_history", {"type": resource_type, "id": resource_id}, masked, session)
        return state

    def upgrade_stored_acls(self) -> None:
        """Bring `_acl` sub-documents written by an older version to the current layout (once per
        database: the schema version is kept in `_meta`)."""
        done = self.store.get_meta(ACL_SCHEMA) or {}
        if done.get("version", 0) >= ACL_SCHEMA_VERSION:
            return
        union = [{"$set": {"_acl.deny": {"$setUnion": [{"$ifNull": ["$_acl.own", []]},
                                                       {"$ifNull": ["$_acl.consent", []]}]}}}]
        for collection in [*self.compartment_params, "_history"]:
            self.store.update_many(collection, {"_acl.patients": {"$exists": True}, "_acl.deny": {"$exists": False}},
                                   union, None)
        self.store.put_meta(ACL_SCHEMA, {"version": ACL_SCHEMA_VERSION})

    def _reference_keys(self, literal: str | None) -> set[str]:
        """Identifier keys (RPPS, FINESS) of a Practitioner / Organization a Consent points at."""
        if not literal or "/" not in literal or literal.startswith("#"):
            return set()
        resource_type, _, resource_id = literal.rpartition("/")
        resource_type = resource_type.rsplit("/", 1)[-1]
        if resource_type not in ("Practitioner", "Organization", "PractitionerRole"):
            return set()
        doc = self.store.get(resource_type, resource_id)
        return keys_of_resource(doc["resource"]) if doc else set()

    # -- request side -------------------------------------------------------------------------
    def request_access(self, actor: Actor | None) -> RequestAccess:
        access = RequestAccess(actor)
        if actor is None:
            return access
        if actor.kind == "patient" and actor.ins:
            access.patients = self._cached(("patient", actor.ins), lambda: [
                f"Patient/{i}" for i in self._identified("Patient", INS_SYSTEMS, actor.ins)])
        elif actor.kind == "practitioner":
            access.keys = self._cached(("practitioner", actor.rpps, actor.organization),
                                       lambda: self._practitioner_keys(actor))
        return access

    def _cached(self, key: tuple, compute: Callable[[], list[str]]) -> list[str]:
        """Identity lookups (INS -> Patient ids, RPPS -> Practitioner ids) change only when a
        Patient, Practitioner or Organization is written: cached for a short while, and dropped
        at once by `identities_changed` on such writes in this process."""
        moment = time.monotonic()
        hit = self._identity_cache.get(key)
        if hit is not None and moment - hit[0] < IDENTITY_CACHE_SECONDS:
            return hit[1]
        value = compute()
        if len(self._identity_cache) > 100_000:
            self._identity_cache.clear()
        self._identity_cache[key] = (moment, value)
        return value

    def identities_changed(self) -> None:
        self._identity_cache.clear()

    def _identified(self, resource_type: str, systems: Iterable[str], value: str) -> list[str]:
        """Ids of the resources carrying `value` under any of `systems` (one indexed query: the
        comma of a token search is an OR)."""
        criteria = ",".join(f"{system}|{value}" for system in sorted(systems))
        return sorted(self.lookup(resource_type, [("identifier", criteria)]))

    def _practitioner_keys(self, actor: Actor) -> list[str]:
        keys = {f"ps:{actor.rpps}"}
        criteria = f"https://rpps.esante.gouv.fr|{actor.rpps},urn:oid:1.2.250.1.71.4.2.1|8{actor.rpps}"
        keys |= {f"Practitioner/{i}" for i in self.lookup("Practitioner", [("identifier", criteria)])}
        if actor.organization:
            keys.add(f"org:{actor.organization}")
            keys |= {f"Organization/{i}" for i in self._identified("Organization", FINESS_SYSTEMS, actor.organization)}
        return sorted(keys)

    def read_filter(self, access: RequestAccess, resource_type: str) -> dict | None:
        """The filter AND-ed into every read of `resource_type` (None: no restriction)."""
        actor = access.actor
        if actor is None or resource_type in CONFORMANCE_TYPES:
            return None
        if actor.kind == "system":
            return None
        if resource_type == "Subscription":     # endpoint and headers belong to the owner (notify sets _owner)
            if actor.kind in ("patient", "practitioner"):
                return {"_owner": {"$in": [*access.patients, *access.keys]}}
            return None if actor.kind == "auditor" else NOTHING
        if not actor.sees_clinical_data:
            return REFERENCE_DATA
        if actor.kind == "auditor":
            return None if resource_type == "AuditEvent" else REFERENCE_DATA
        if actor.kind == "patient":
            # `$in` with null also matches a missing `_acl.patients`: reference data
            return {"$and": [{"_acl.patients": {"$in": [*access.patients, None]}}, {"_acl.deny": {"$ne": INVISIBLE}}]}
        if resource_type == "AuditEvent":
            return NOTHING                 # professionals never read the audit trail
        if resource_type in PRIVATE_TO_PARTICIPANTS:
            # a message is read by its sender and recipients only, whatever else they may see
            return {"$and": [self._practitioner_filter(access, actor), {"_acl.participants": {"$in": access.keys}}]}
        return self._practitioner_filter(access, actor)

    def _practitioner_filter(self, access: RequestAccess, actor: Actor) -> dict:
        """Visible: what no deny token concerns (reference data has no `_acl`, and `$nin` matches a
        missing field); what the professional authored; what the patient authorised them to see
        despite masking or opposition. Deny tokens are precomputed at write time so that the
        filter stays a few set tests (see `_consent_tokens`); the common case is the first branch."""
        keys = access.keys
        denied_classes = [f"class:{c}" for c in self.matrix.denied_classes(actor.profession)]
        branches: list[dict] = [
            {"_acl.deny": {"$nin": [MASKED, OPPOSED, *denied_classes, *keys]}},
            {"_acl.authors": {"$in": keys}},
            {"_acl.authorised": {"$in": keys}, "_acl.deny": {"$nin": [*denied_classes, *keys]}},
        ]
        if actor.is_emergency:
            branches.append({"_acl.deny": {"$nin": [*keys, OPPOSED, MASKED, EMERGENCY_REFUSED]}})
            branches.append({"_acl.deny": {"$all": [EMERGENCY_ALLOWED], "$ne": MASKED}})
        return {"$or": branches}

    def check_interaction(self, access: RequestAccess, resource_type: str, interaction: str) -> None:
        actor = access.actor
        if actor is None:
            return
        if not actor.scopes.allows(resource_type, interaction):
            raise error(403, "forbidden", f"The token's scopes ({actor.scopes or 'none'}) do not allow {interaction} "
                        f"on {resource_type}")
        writes = interaction in ("create", "update", "patch", "delete")
        if writes and not actor.sees_clinical_data:
            raise error(403, "forbidden", f"A {actor.kind} token may not write health data")
        if writes and actor.kind == "auditor":
            raise error(403, "forbidden", "An auditor token is read-only")

    def check_write(self, access: RequestAccess, resource_type: str, acl: dict | None) -> None:
        """May this actor store a resource whose new `_acl` is `acl`?"""
        actor = access.actor
        opposed = acl is not None and OPPOSED in acl.get("consent", [])
        if actor is None or acl is None or actor.kind == "system" and not opposed:
            return
        if actor.kind == "patient":
            foreign = [p for p in acl["patients"] if p not in access.patients]
            if foreign:
                raise error(403, "forbidden", f"A patient may only write to their own record, not {foreign[0]}")
            return
        if opposed and not (actor.kind == "practitioner" and set(access.keys) & set(acl["authorised"])):
            raise FhirError(403, [Issue("error", "forbidden",
                                        "The patient has closed their health space or opposed its use: nothing can "
                                        "be added to it")])
        if actor.kind == "practitioner" and set(access.keys) & set(acl.get("consent", [])):
            raise error(403, "forbidden", "The patient has blocked this professional or organisation")


def _consent_update(tokens: list[str], authorised: list[str] | None = None) -> list[dict]:
    """An update pipeline that sets `_acl.consent` (and `_acl.authorised`) and recomputes
    `_acl.deny` from it; values are `$literal` so that no token is read as a field path."""
    values: dict[str, Any] = {"_acl.consent": {"$literal": tokens},
                              "_acl.deny": {"$setUnion": [{"$ifNull": ["$_acl.own", []]}, {"$literal": tokens}]}}
    if authorised is not None:
        values["_acl.authorised"] = {"$literal": authorised}
    return [{"$set": values}]


def _consent_tokens(state: ConsentState, reference: str | None) -> list[str]:
    """The consent-derived tokens of a resource: blocked actor keys, opposition, emergency rule,
    and `!masked` when the Consent masks this very resource (`reference` "masked" forces it)."""
    tokens = set(state.blocked)
    if state.opposed:
        tokens.add(OPPOSED)
    if state.emergency == "refused":
        tokens.add(EMERGENCY_REFUSED)
    elif state.emergency == "allowed":
        tokens.add(EMERGENCY_ALLOWED)
    if reference == "masked" or reference in state.masked:
        tokens.add(MASKED)
    return sorted(tokens)


def _patient_refs(values: Iterable[object]) -> list[str]:
    return sorted({"Patient/" + v.rsplit("Patient/", 1)[1] for v in values if isinstance(v, str) and "Patient/" in v})


def _participants(resource: dict) -> set[str]:
    contained = contained_by_id(resource)
    keys: set[str] = set()
    for element in ("sender", "recipient"):
        value = resource.get(element)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                keys |= keys_of_reference(item, contained)
    return keys


def _labels(resource: dict) -> list[str]:
    codes = {c.get("code") for c in (resource.get("meta") or {}).get("security", []) or [] if isinstance(c, dict)}
    for label in resource.get("securityLabel", []) or []:
        if isinstance(label, dict):
            codes |= {c.get("code") for c in label.get("coding", []) or [] if isinstance(c, dict)}
    return sorted(c for c in codes if c)


def _authors(resource: dict) -> set[str]:
    contained = contained_by_id(resource)
    keys: set[str] = set()
    for element in AUTHORED_ELEMENTS:
        value = resource.get(element)
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, dict):
                continue
            reference = item.get("actor") if isinstance(item.get("actor"), dict) else item
            if element == "attester":
                reference = item.get("party") if isinstance(item.get("party"), dict) else {}
            keys |= keys_of_reference(reference, contained)
    return keys
