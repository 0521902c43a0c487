"""The access decision, compiled into storage filters.

At write time every resource gets an `_acl` sub-document (beside `_index`, in the current
version and in its history version) that denormalises what the decision needs: the patients
whose compartment holds it, their consent state (opposition, blocked and authorised actors,
emergency rule), the document's security labels, its authors and its class for the access
matrix. When a Consent changes, the consent state of that patient is recomputed and written into
every resource of the patient in the same transaction, so a change takes effect on the next
request with no cache to go stale.

At read time the actor's rights become one MongoDB filter over `_acl`, AND-ed into every query
(read, vread, search, includes, totals, history, $everything), so paging and totals cannot leak.
"""

from __future__ import annotations

from collections.abc import Callable
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
NOTHING = {"_id": {"$in": []}}
REFERENCE_DATA = {"_acl.patients": {"$exists": False}}
AUTHORED_ELEMENTS = ("author", "recorder", "asserter", "requester", "performer", "sender", "source", "attester")

# Conformance and directory resources anyone authenticated (or not, for conformance) may read.
CONFORMANCE_TYPES = frozenset({
    "CapabilityStatement", "StructureDefinition", "ImplementationGuide", "SearchParameter", "OperationDefinition",
    "CompartmentDefinition", "ValueSet", "CodeSystem", "ConceptMap", "NamingSystem", "StructureMap",
})

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

    # -- write side: the _acl of a resource ---------------------------------------------------
    def acl_for(self, resource_type: str, resource: dict, index: dict, session: Any = None) -> dict | None:
        patients = self.patients_of(resource_type, resource, index)
        if not patients:
            return None
        state = self._state_of(patients, session)
        reference = f"{resource_type}/{resource.get('id')}"
        return {
            "patients": patients,
            "opposed": state.opposed,
            "blocked": sorted(state.blocked),
            "authorised": sorted(state.authorised),
            "emergency": state.emergency,
            "consent_masked": reference in state.masked,
            "labels": _labels(resource),
            "authors": sorted(_authors(resource)),
            "classes": self.matrix.classes_of(resource),
        }

    def patients_of(self, resource_type: str, resource: dict, index: dict) -> list[str]:
        if resource_type == "Patient":
            return [f"Patient/{resource.get('id')}"]
        params = self.compartment_params.get(resource_type)
        if not params:
            return []
        found: set[str] = set()
        for param in params:
            values = index.get(param)
            for value in values if isinstance(values, list) else [values]:
                if isinstance(value, str) and "Patient/" in value:
                    found.add("Patient/" + value.rsplit("Patient/", 1)[1])
        return sorted(found)

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
        """Recompute a patient's consent state and write it into every resource of the patient."""
        state = consent_state(consents, self._reference_keys)
        self.store.put_meta(f"consent:{patient}", state.to_document(), session)
        values = {"_acl.opposed": state.opposed, "_acl.blocked": sorted(state.blocked),
                  "_acl.authorised": sorted(state.authorised), "_acl.emergency": state.emergency}
        for collection in [*self.compartment_params, "_history"]:
            self.store.update_many(collection, {"_acl.patients": patient},
                                   {"$set": {**values, "_acl.consent_masked": False}}, session)
        for reference in state.masked:
            resource_type, _, resource_id = reference.partition("/")
            if resource_type in self.compartment_params:
                self.store.update_many(resource_type, {"_id": resource_id, "_acl.patients": patient},
                                       {"$set": {"_acl.consent_masked": True}}, session)
                self.store.update_many("_history", {"type": resource_type, "id": resource_id},
                                       {"$set": {"_acl.consent_masked": True}}, session)
        return state

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
            ids: list[str] = []
            for system in sorted(INS_SYSTEMS):
                ids += self.lookup("Patient", [("identifier", f"{system}|{actor.ins}")])
            access.patients = sorted({f"Patient/{i}" for i in ids})
        elif actor.kind == "practitioner":
            access.keys = self._practitioner_keys(actor)
        return access

    def _practitioner_keys(self, actor: Actor) -> list[str]:
        keys = {f"ps:{actor.rpps}"}
        for system, value in (("https://rpps.esante.gouv.fr", actor.rpps),
                              ("urn:oid:1.2.250.1.71.4.2.1", f"8{actor.rpps}")):
            keys |= {f"Practitioner/{i}" for i in self.lookup("Practitioner", [("identifier", f"{system}|{value}")])}
        if actor.organization:
            keys.add(f"org:{actor.organization}")
            for system in sorted(FINESS_SYSTEMS):
                keys |= {f"Organization/{i}" for i in
                         self.lookup("Organization", [("identifier", f"{system}|{actor.organization}")])}
        return sorted(keys)

    def read_filter(self, access: RequestAccess, resource_type: str) -> dict | None:
        """The filter AND-ed into every read of `resource_type` (None: no restriction)."""
        actor = access.actor
        if actor is None or resource_type in CONFORMANCE_TYPES:
            return None
        if actor.kind == "system":
            return None
        if not actor.sees_clinical_data:
            return REFERENCE_DATA
        if actor.kind == "auditor":
            return None if resource_type == "AuditEvent" else REFERENCE_DATA
        if actor.kind == "patient":
            return {"$or": [REFERENCE_DATA, {"_acl.patients": {"$in": access.patients},
                                             "_acl.labels": {"$ne": INVISIBLE_TO_PATIENT}}]}
        return self._practitioner_filter(access, actor)

    def _practitioner_filter(self, access: RequestAccess, actor: Actor) -> dict:
        keys = access.keys
        denied = self.matrix.denied_classes(actor.profession)
        not_masked = {"_acl.labels": {"$ne": MASKED_FROM_PROFESSIONALS}, "_acl.consent_masked": {"$ne": True}}
        matrix_ok = {"_acl.classes": {"$nin": denied}} if denied else {}
        not_blocked = {"_acl.blocked": {"$nin": keys}}
        branches: list[dict] = [
            REFERENCE_DATA,
            {"_acl.authors": {"$in": keys}},
            {"_acl.authorised": {"$in": keys}, **not_blocked, **matrix_ok},
            {"_acl.opposed": {"$ne": True}, **not_blocked, **not_masked, **matrix_ok},
        ]
        if actor.is_emergency:
            branches.append({"_acl.emergency": "allowed", **not_masked})
            branches.append({"_acl.emergency": {"$ne": "refused"}, "_acl.opposed": {"$ne": True},
                             **not_blocked, **not_masked})
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
        if actor is None or acl is None or actor.kind == "system" and not acl.get("opposed"):
            return
        if actor.kind == "patient":
            foreign = [p for p in acl["patients"] if p not in access.patients]
            if foreign:
                raise error(403, "forbidden", f"A patient may only write to their own record, not {foreign[0]}")
            return
        if acl.get("opposed") and not (actor.kind == "practitioner" and set(access.keys) & set(acl["authorised"])):
            raise FhirError(403, [Issue("error", "forbidden",
                                        "The patient has closed their health space or opposed its use: nothing can "
                                        "be added to it")])
        if actor.kind == "practitioner" and set(access.keys) & set(acl.get("blocked", [])):
            raise error(403, "forbidden", "The patient has blocked this professional or organisation")


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
