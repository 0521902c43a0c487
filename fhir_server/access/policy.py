"""The access decision, compiled into storage filters.

At write time every resource gets an `_acl` sub-document (beside `_index`, in the current
version and in its history version) that denormalises what the decision needs: the patients
whose compartment holds it (`patients`), its authors and the actors the patient authorised
(`authorised`), and deny tokens: `own` from the resource itself (`!masked` for MASQUE_PS,
`!invisible` for INVISIBLE_PATIENT, `class:X` for the access matrix), `consent` from the
patient's Consents (blocked actor keys, `!opposed`, `!masked` for a document a Consent masks,
the emergency rule), and `deny`, their union but for the emergency rule, which is the only list
the ordinary read filters test (one set test per rule instead of two). The emergency rule, on
every resource of a patient who set one, is tested in `consent` by the emergency branches only:
in `deny` it would lengthen the list every ordinary read tests on every document. When a Consent
changes, the consent state of that patient is recomputed and written into every resource of the
patient in the same transaction, so a change takes effect on the next request with no cache to
go stale.

At read time the actor's rights become one MongoDB filter over `_acl`, AND-ed into every query
(read, vread, search, includes, totals, history, $everything), so paging and totals cannot leak.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from fhir_server.engine.interactions import WriteEvent

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
ACL_SCHEMA_VERSION = 4            # 2: `_acl.deny`, the union of `own` and `consent`; 3: AuditEvent patients;
                                  # 4: the emergency rule out of `deny`
EMERGENCY_RULES = (EMERGENCY_REFUSED, EMERGENCY_ALLOWED)
AUTHORED_ELEMENTS = ("author", "recorder", "asserter", "requester", "performer", "sender", "source", "attester")

# Conformance and directory resources anyone authenticated (or not, for conformance) may read.
CONFORMANCE_TYPES = frozenset({
    "CapabilityStatement", "StructureDefinition", "ImplementationGuide", "SearchParameter", "OperationDefinition",
    "CompartmentDefinition", "ValueSet", "CodeSystem", "ConceptMap", "NamingSystem", "StructureMap",
})

PATIENT_ROLE = "1"                # object-role "Patient" of an AuditEvent entity
CONTENT_TYPES = ("Binary", "Bundle")   # outside the compartment, but carry their document's `_acl`
IDENTITY_CACHE_SECONDS = 30
ACTOR_TYPES = frozenset({"Practitioner", "Organization", "PractitionerRole"})
# Consent actors that stand for several professionals: their members, as References
TEAM_MEMBERS: dict[str, Callable[[dict], list[dict]]] = {
    "CareTeam": lambda team: [p["member"] for p in team.get("participant") or []
                              if isinstance(p, dict) and isinstance(p.get("member"), dict)],
    "Group": lambda group: [m["entity"] for m in group.get("member") or []
                            if isinstance(m, dict) and isinstance(m.get("entity"), dict) and not m.get("inactive")],
}
PRIVATE_TO_PARTICIPANTS = frozenset({"Communication"})
# Types whose read rule differs from the common one (see `read_filter`); "*" stands for any other
# type (only a wildcard scope allows it).
SPECIAL_TYPES = CONFORMANCE_TYPES | PRIVATE_TO_PARTICIPANTS | {"Subscription", "AuditEvent"}
ANY_OTHER_TYPE = "*"
IDENTITY_TYPES = frozenset({"Patient", "Practitioner", "PractitionerRole", "Organization"})

Lookup = Callable[[str, list[tuple[str, str]]], list[str]]      # (type, search params) -> ids
# A resource's search index, or how to extract it when it turns out to be needed.
IndexSource = dict | Callable[[], dict]


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
    def acl_for(self, resource_type: str, resource: dict, index: dict, session: Any = None,
                known_invisible: dict[str, bool] | None = None) -> dict | None:
        """`known_invisible` (AuditEvent only): what the caller already knows of the resources the
        event names, by "Type/id" (see AuditRecord.known_invisible); the others are looked up."""
        patients = self.patients_of(resource_type, resource, index)
        if not patients:
            return None
        if resource_type == "AuditEvent":
            return self._audit_acl(resource, patients, session, known_invisible or {})
        state = self._state_of(patients, session)
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
            "deny": sorted({*own, *_denying(consent)}),
        }
        if resource_type in PRIVATE_TO_PARTICIPANTS:
            acl["participants"] = sorted(_participants(resource))
        return acl

    def patients_of(self, resource_type: str, resource: dict, index: IndexSource) -> list[str]:
        """`index` may be a function giving it: it is only extracted when the type's compartment
        parameters are needed (not for a Patient, an AuditEvent about patients, a document)."""
        if resource_type == "Patient":
            return [f"Patient/{resource.get('id')}"]
        if resource_type == "AuditEvent" and _audit_patients(resource):
            # the record the event is about, not a patient who merely acted (e.g. was refused)
            return _audit_patients(resource)
        if resource_type == "Bundle" and resource.get("type") == "document":
            return self._document_patients(resource)
        params = self.compartment_params.get(resource_type)
        if not params:
            return []
        if callable(index):
            index = index()
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

    def _audit_acl(self, event: dict, patients: list[str], session: Any, known_invisible: dict[str, bool]) -> dict:
        """An AuditEvent is read by its patient and auditors only (professionals never read the
        trail, so no consent token is needed); one about a resource invisible to the patient is
        invisible to them too, or its entity and title would reveal it."""
        own = [INVISIBLE] if self._concerns_invisible(event, session, known_invisible) else []
        return {"patients": patients, "authors": [], "authorised": [], "own": own, "consent": [], "deny": own}

    def _concerns_invisible(self, event: dict, session: Any, known_invisible: dict[str, bool] | None = None) -> bool:
        ids_by_type: dict[str, set[str]] = {}
        for reference in _audit_data_references(event):
            resource_type, _, resource_id = reference.partition("/")
            if resource_type not in self.compartment_params and resource_type not in CONTENT_TYPES:
                continue
            if known_invisible and reference in known_invisible:
                if known_invisible[reference]:
                    return True
                continue
            ids_by_type.setdefault(resource_type, set()).add(resource_id)
        # by `_id` alone, tested here: a point lookup, where `_id` + `_acl.deny` makes the embedded
        # database's planner weigh every index of the collection
        return any(is_invisible_to_patient(doc.get("_acl"))
                   for t, ids in sorted(ids_by_type.items())
                   for doc in self.store.find(t, {"_id": {"$in": sorted(ids)}}, projection={"_acl.deny": 1},
                                              session=session))

    def _state_of(self, patients: list[str], session: Any) -> ConsentState:
        merged = ConsentState()
        documents = self.store.get_metas([f"consent:{patient}" for patient in patients], session)
        for patient in patients:
            state = ConsentState.from_document(documents.get(f"consent:{patient}"))
            merged.opposed |= state.opposed
            merged.blocked |= state.blocked
            merged.authorised |= state.authorised
            merged.masked |= state.masked
            if state.emergency == "refused" or merged.emergency == "default":
                merged.emergency = state.emergency      # one patient's refusal prevails
        return merged

    def refresh_consent_state(self, patient: str, consents: list[dict], session: Any) -> ConsentState:
        """Recompute a patient's consent state and write it into every resource of the patient
        (current and historical versions): `_acl.consent`, `_acl.authorised` and `_acl.deny`."""
        state = consent_state(consents, self._reference_keys)
        self.store.put_meta(f"consent:{patient}", state.to_document(), session)
        update = _consent_update(_consent_tokens(state, None), sorted(state.authorised))
        for collection, where in self._record_of(patient):
            self.store.update_many(collection, where, update, session)
        masked = _consent_update(_consent_tokens(state, "masked"))
        for reference in state.masked:
            resource_type, _, resource_id = reference.partition("/")
            if resource_type in self.compartment_params:
                # only this patient's resources: a Consent cannot mask somebody else's document
                mine = {"_acl.patients": patient}
                self.store.update_many(resource_type, {**mine, "_id": resource_id}, masked, session)
                self.store.update_many("_history", {**mine, "type": resource_type, "id": resource_id}, masked,
                                       session)
        self._refresh_shared(patient, session)
        return state

    def _record_of(self, patient: str) -> list[tuple[str, dict]]:
        """Where the patient's resources are, except the audit trail (it holds no consent tokens)."""
        mine = {"_acl.patients": patient}
        return [*((c, mine) for c in self.compartment_params if c != "AuditEvent"),
                ("_history", {**mine, "type": {"$ne": "AuditEvent"}})]

    def _refresh_shared(self, patient: str, session: Any) -> None:
        """A resource of several patients (an appointment, a message...) carries the consent state
        of all of them merged, not only that of the patient whose Consent changed."""
        for collection, where in self._record_of(patient):
            if collection == "_history":
                continue
            shared = {**where, "_acl.patients.1": {"$exists": True}}
            for doc in self.store.find(collection, shared, projection={"_acl.patients": 1}, session=session):
                state = self._state_of(doc["_acl"]["patients"], session)
                tokens = _consent_tokens(state, f"{collection}/{doc['_id']}")
                update = _consent_update(tokens, sorted(state.authorised))
                self.store.update_many(collection, {"_id": doc["_id"]}, update, session)
                self.store.update_many("_history", {"type": collection, "id": doc["_id"]}, update, session)

    def on_write(self, event: WriteEvent) -> None:
        """Write hook, in the write's transaction: the access data of a resource's history follow
        its current version, and the patient's view of the audit trail follows the resource's
        visibility to the patient."""
        if event.new is None or event.acl is None:
            return
        if event.version > 1 and not self._history_already_aligned(event):
            self._align_history(event.resource_type, event.resource_id, event.acl, event.session)
        if (INVISIBLE_TO_PATIENT in _labels(event.old or {})) != (INVISIBLE in event.acl["own"]):
            self._refresh_audit_visibility(f"{event.resource_type}/{event.resource_id}", event.acl["patients"],
                                           event.session)

    def _history_already_aligned(self, event: WriteEvent) -> bool:
        """In the patient compartment, every version carries the access data of the current one
        (each write, consent change and upgrade sets them on the current version and the history
        together), so a write that keeps them unchanged has nothing to realign. Only trusted
        inside a transaction: without one, an interrupted write may have left older versions behind."""
        return (event.session is not None and event.old is not None and event.old_acl == event.acl
                and event.resource_type in self.compartment_params)

    def _align_history(self, resource_type: str, resource_id: str, acl: dict, session: Any) -> None:
        """Older versions are read under the current decision: masking a document (or blocking,
        or making it invisible) hides its earlier versions too, and un-masking shows them again."""
        self.store.update_many("_history", {"type": resource_type, "id": resource_id}, {"$set": {"_acl": acl}},
                               session)

    def _refresh_audit_visibility(self, reference: str, patients: list[str], session: Any) -> None:
        """Recompute `!invisible` on the patients' AuditEvents that name `reference`."""
        named = {"_acl.patients": {"$in": patients},
                 "resource.entity.what.reference": {"$regex": f"^{re.escape(reference)}(/_history/|$)"}}
        for doc in self.store.find("AuditEvent", named, projection={"resource.entity": 1}, session=session):
            own = [INVISIBLE] if self._concerns_invisible(doc["resource"], session) else []
            update = {"$set": {"_acl.own": own, "_acl.deny": own}}
            self.store.update_many("AuditEvent", {"_id": doc["_id"]}, update, session)
            self.store.update_many("_history", {"type": "AuditEvent", "id": doc["_id"]}, update, session)

    def upgrade_stored_acls(self) -> None:
        """Bring `_acl` sub-documents written by an older version to the current layout (once per
        database: the schema version is kept in `_meta`)."""
        done = (self.store.get_meta(ACL_SCHEMA) or {}).get("version", 0)
        if done >= ACL_SCHEMA_VERSION:
            return
        if done < 2:
            union = [{"$set": {"_acl.deny": {"$setUnion": [{"$ifNull": ["$_acl.own", []]},
                                                           {"$ifNull": ["$_acl.consent", []]}]}}}]
            for collection in [*self.compartment_params, "_history"]:
                self.store.update_many(collection, {"_acl.patients": {"$exists": True},
                                                    "_acl.deny": {"$exists": False}}, union, None)
        if done < 3:
            self._upgrade_audit_patients()
        if done < 4:
            without_rule = [{"$set": {"_acl.deny": {"$setDifference": ["$_acl.deny",
                                                                       {"$literal": list(EMERGENCY_RULES)}]}}}]
            for collection in [*self.compartment_params, "_history"]:
                self.store.update_many(collection, {"_acl.deny": {"$in": list(EMERGENCY_RULES)}}, without_rule, None)
        self.store.put_meta(ACL_SCHEMA, {"version": ACL_SCHEMA_VERSION})

    def _upgrade_audit_patients(self) -> None:
        """Version 3: an AuditEvent belongs to the patients it is about (its entities in the role
        of patient), no longer to a patient who merely acted; consent tokens are dropped."""
        patient_entities = {"$filter": {"input": "$resource.entity", "cond": {"$eq": ["$$this.role.code",
                                                                                      PATIENT_ROLE]}}}
        about = [{"$set": {"_acl.patients": {"$map": {"input": patient_entities, "in": "$$this.what.reference"}},
                           "_acl.consent": [], "_acl.authorised": [], "_acl.deny": "$_acl.own"}}]
        with_patient = {"_acl.patients": {"$exists": True}, "resource.entity.role.code": PATIENT_ROLE}
        self.store.update_many("AuditEvent", with_patient, about, None)
        self.store.update_many("_history", {**with_patient, "type": "AuditEvent"}, about, None)

    def _reference_keys(self, literal: str | None, depth: int = 0) -> set[str]:
        """Keys (references, RPPS, FINESS) of the professionals or organisations a Consent actor
        points at: a Practitioner, an Organization, a PractitionerRole (its practitioner only), or
        the members of a CareTeam or Group."""
        if not literal or "/" not in literal or literal.startswith("#"):
            return set()
        resource_type, _, resource_id = literal.rpartition("/")
        resource_type = resource_type.rsplit("/", 1)[-1]
        if resource_type not in ACTOR_TYPES and resource_type not in TEAM_MEMBERS:
            return set()
        doc = self.store.get(resource_type, resource_id)
        if doc is None:
            return set()
        if resource_type in ACTOR_TYPES:
            return keys_of_resource(doc["resource"], role_organization=False)
        if depth > 0:                      # a team of teams is not followed further
            return set()
        contained = contained_by_id(doc["resource"])
        keys: set[str] = set()
        for member in TEAM_MEMBERS[resource_type](doc["resource"]):
            keys |= keys_of_reference(member, contained, role_organization=False)
            keys |= self._reference_keys(member.get("reference"), depth + 1)
        return keys

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
        if resource_type in CONFORMANCE_TYPES:
            return None
        if actor is None:
            return NOTHING                 # anonymous: conformance resources only
        if not actor.scopes.allows_reading(resource_type):
            # scopes bound everything, including what comes in by `_include`, chains or `$everything`
            return NOTHING
        if actor.kind == "system":
            return None
        if resource_type == "Subscription":     # endpoint and headers belong to the owner (notify sets _owner)
            if actor.kind in ("patient", "practitioner"):
                return {"_owner": {"$in": [*access.patients, *access.keys]}}
            return None if actor.kind == "auditor" else NOTHING
        if resource_type == "AuditEvent":
            return self._audit_filter(access, actor)
        if not actor.sees_clinical_data:
            return REFERENCE_DATA
        if actor.kind == "auditor":
            return REFERENCE_DATA
        if actor.kind == "patient":
            # `$in` with null also matches a missing `_acl.patients`: reference data
            return {"$and": [{"_acl.patients": {"$in": [*access.patients, None]}}, {"_acl.deny": {"$ne": INVISIBLE}}]}
        if resource_type in PRIVATE_TO_PARTICIPANTS:
            # a message is read by its sender and recipients only, whatever else they may see
            return {"$and": [self._practitioner_filter(access, actor), {"_acl.participants": {"$in": access.keys}}]}
        return self._practitioner_filter(access, actor)

    @staticmethod
    def _audit_filter(access: RequestAccess, actor: Actor) -> dict | None:
        """The audit trail: auditors read it all; a patient reads the events of their own record
        (not those without a patient, nor those about what is invisible to them); nobody else."""
        if actor.kind == "auditor":
            return None
        if actor.kind == "patient" and access.patients:
            return {"$and": [{"_acl.patients": {"$in": access.patients}}, {"_acl.deny": {"$ne": INVISIBLE}}]}
        return NOTHING

    def history_filter(self, access: RequestAccess) -> dict | None:
        """The filter of a system-level history, whose versions (field `type`) mix resource types:
        each type that has a rule of its own gets it, the others the common rule."""
        actor = access.actor
        if actor is None:
            return {"type": {"$in": sorted(CONFORMANCE_TYPES)}}
        special = sorted(SPECIAL_TYPES | actor.scopes.named_types())
        branches = [_for_type(t, self.read_filter(access, t)) for t in special]
        if actor.scopes.allows_reading(ANY_OTHER_TYPE):
            branches.append(_for_type({"$nin": special}, self.read_filter(access, ANY_OTHER_TYPE)))
        branches = [b for b in branches if b is not None]
        return {"$or": branches} if branches else NOTHING

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
            branches.append({"_acl.deny": {"$nin": [*keys, OPPOSED, MASKED]},
                             "_acl.consent": {"$ne": EMERGENCY_REFUSED}})
            branches.append({"_acl.consent": EMERGENCY_ALLOWED, "_acl.deny": {"$ne": MASKED}})
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
        if actor is None or acl is None:
            return
        opposed = OPPOSED in acl.get("deny", [])
        if actor.kind == "patient":
            foreign = [p for p in acl["patients"] if p not in access.patients]
            if foreign:
                raise error(403, "forbidden", f"A patient may only write to their own record, not {foreign[0]}")
            return
        if actor.kind == "system" and (not opposed or resource_type == "Consent"):
            return                  # the trusted back-end may still record the patient's choices
        if opposed and not (actor.kind == "practitioner" and set(access.keys) & set(acl["authorised"])):
            raise FhirError(403, [Issue("error", "forbidden",
                                        "The patient has closed their health space or opposed its use: nothing can "
                                        "be added to it")])
        if actor.kind == "practitioner" and set(access.keys) & set(acl.get("deny", [])):
            raise error(403, "forbidden", "The patient has blocked this professional or organisation")


def is_invisible_to_patient(acl: dict | None) -> bool:
    """Whether access data (`_acl`) make a resource invisible to its patient (INVISIBLE_PATIENT)."""
    return INVISIBLE in (acl or {}).get("deny", [])


def _for_type(resource_type: str | dict, where: dict | None) -> dict | None:
    """One branch of a mixed-type history filter (None when the type is not readable at all)."""
    if where == NOTHING:
        return None
    return {"type": resource_type} if where is None else {"$and": [{"type": resource_type}, where]}


def _consent_update(tokens: list[str], authorised: list[str] | None = None) -> list[dict]:
    """An update pipeline that sets `_acl.consent` (and `_acl.authorised`) and recomputes
    `_acl.deny` from it; values are `$literal` so that no token is read as a field path."""
    values: dict[str, Any] = {"_acl.consent": {"$literal": tokens},
                              "_acl.deny": {"$setUnion": [{"$ifNull": ["$_acl.own", []]},
                                                          {"$literal": _denying(tokens)}]}}
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


def _denying(consent_tokens: list[str]) -> list[str]:
    """The consent tokens that go into `deny`: all but the emergency rule (see the module doc)."""
    return [t for t in consent_tokens if t not in EMERGENCY_RULES]


def _audit_patients(event: dict) -> list[str]:
    """The patients an AuditEvent is about: its entities in the role of patient."""
    return _patient_refs((e.get("what") or {}).get("reference") for e in _audit_entities(event)
                         if ((e.get("role") or {}).get("code")) == PATIENT_ROLE)


def _audit_data_references(event: dict) -> list[str]:
    """The resources (without version) an AuditEvent names, apart from its patient entities."""
    references = [(e.get("what") or {}).get("reference") for e in _audit_entities(event)
                  if ((e.get("role") or {}).get("code")) != PATIENT_ROLE]
    return sorted({r.split("/_history/")[0] for r in references if isinstance(r, str) and "/" in r})


def _audit_entities(event: dict) -> list[dict]:
    return [e for e in event.get("entity") or [] if isinstance(e, dict)]


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
