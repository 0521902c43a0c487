"""The patient's Consents, reduced to what the access decision needs.

Our Consent model (profile `espace-consent`, built on IHE PCF): `status` active, `patient`, and
a `provision` whose `type` is the base rule when it carries no restriction (deny = the patient
opposes the health space: no professional sees anything), with nested provisions (or a
restricted top-level one) as exceptions:

| provision                              | meaning                                              |
|----------------------------------------|------------------------------------------------------|
| deny  + actor                          | this professional / organisation is blocked          |
| permit + actor                         | explicitly authorised (sees masked documents; passes an opposition) |
| deny  + data (DocumentReference, ...)  | these documents are masked from professionals        |
| deny  + purpose ETREAT                 | emergency (break-the-glass) access refused           |
| permit + purpose ETREAT                | emergency access allowed even despite opposition or blocks |
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fhir_server.access.identity import contained_by_id, keys_of_reference

EMERGENCY = "ETREAT"


@dataclass
class ConsentState:
    opposed: bool = False
    blocked: set[str] = field(default_factory=set)
    authorised: set[str] = field(default_factory=set)
    masked: set[str] = field(default_factory=set)          # "DocumentReference/id"
    emergency: str = "default"                              # default | refused | allowed
    consents: list[str] = field(default_factory=list)       # "Consent/id" that shaped this state

    def to_document(self) -> dict:
        return {"opposed": self.opposed, "blocked": sorted(self.blocked), "authorised": sorted(self.authorised),
                "masked": sorted(self.masked), "emergency": self.emergency, "consents": self.consents}

    @classmethod
    def from_document(cls, doc: dict | None) -> ConsentState:
        if not doc:
            return cls()
        return cls(doc.get("opposed", False), set(doc.get("blocked", [])), set(doc.get("authorised", [])),
                   set(doc.get("masked", [])), doc.get("emergency", "default"), list(doc.get("consents", [])))


def consent_state(consents: Iterable[dict], resolve_keys=None) -> ConsentState:
    """Fold the patient's active Consents into one state. `resolve_keys(reference)` may add the
    identifier keys of a referenced Practitioner / Organization (an RPPS, a FINESS)."""
    state = ConsentState()
    for consent in consents:
        if consent.get("status") != "active":
            continue
        state.consents.append(f"Consent/{consent.get('id')}")
        contained = contained_by_id(consent)
        provision = consent.get("provision") or {}
        if _is_base_rule(provision):
            state.opposed = state.opposed or provision.get("type") == "deny"
        else:
            _apply(provision, state, contained, resolve_keys)
        for nested in _nested(provision):
            _apply(nested, state, contained, resolve_keys)
    return state


def _is_base_rule(provision: dict) -> bool:
    return not (provision.get("actor") or provision.get("data") or provision.get("purpose"))


def _nested(provision: dict) -> Iterable[dict]:
    for child in provision.get("provision", []) or []:
        yield child
        yield from _nested(child)


def _apply(provision: dict, state: ConsentState, contained: dict, resolve_keys) -> None:
    kind = provision.get("type")
    if kind not in ("permit", "deny"):
        return
    purposes = {c.get("code") for c in provision.get("purpose", []) or []}
    if EMERGENCY in purposes:
        if kind == "deny":
            state.emergency = "refused"
        elif state.emergency != "refused":
            state.emergency = "allowed"
        return
    for actor in provision.get("actor", []) or []:
        reference = actor.get("reference") or {}
        keys = keys_of_reference(reference, contained, role_organization=False)
        if resolve_keys is not None:
            keys |= resolve_keys(reference.get("reference"))
        (state.authorised if kind == "permit" else state.blocked).update(keys)
    if kind == "deny":
        for data in provision.get("data", []) or []:
            literal = (data.get("reference") or {}).get("reference")
            if isinstance(literal, str):
                # "DocumentReference/x", absolute or versioned: the document, whatever its version
                state.masked.add("/".join(literal.split("/_history/")[0].split("/")[-2:]))
