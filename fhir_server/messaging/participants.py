"""Who a message's references name: kinds (professional, patient) and identity keys, the same
keys the access policy gives the actor of a request (`Practitioner/id`, `ps:RPPS`, `Patient/id`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from fhir_server.access.identity import INS_SYSTEMS, RPPS_SYSTEMS, contained_by_id, keys_of_reference, keys_of_resource
from fhir_server.engine.model import ID_PATTERN

TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
PROFESSIONAL_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization"})

# Reads a resource as the writer may see it ("Type/id" -> resource, or None).
Resolver = Callable[[str], dict | None]


def literal(reference: object) -> str | None:
    """`Type/id` of a relative or absolute literal reference (None for contained, conditional, urn)."""
    if not isinstance(reference, dict):
        return None
    value = reference.get("reference")
    if not isinstance(value, str) or value.startswith(("#", "urn:")) or "?" in value or "/" not in value:
        return None
    parts = value.split("/_history/", 1)[0].split("/")
    if len(parts) < 2 or not TYPE_NAME.match(parts[-2]) or not ID_PATTERN.match(parts[-1]):
        return None
    return f"{parts[-2]}/{parts[-1]}"


def type_of(reference: object, message: dict) -> str | None:
    """The resource type a reference points at: literal, contained, or told by its identifier."""
    if not isinstance(reference, dict):
        return None
    target = literal(reference)
    if target:
        return target.split("/", 1)[0]
    value = reference.get("reference")
    if isinstance(value, str) and value.startswith("#"):
        return (contained_by_id(message).get(value[1:]) or {}).get("resourceType")
    system = (reference.get("identifier") or {}).get("system")
    if system in RPPS_SYSTEMS:
        return "Practitioner"
    if system in INS_SYSTEMS:
        return "Patient"
    return reference.get("type") if isinstance(reference.get("type"), str) else None


def is_professional(reference: object, message: dict) -> bool:
    return type_of(reference, message) in PROFESSIONAL_TYPES


def keys(reference: object, message: dict, resolve: Resolver) -> set[str]:
    """Identity keys of a sender or recipient; a PractitionerRole also names its practitioner and
    organisation, so that a professional is recognised whichever form the message uses."""
    if not isinstance(reference, dict):
        return set()
    found = keys_of_reference(reference, contained_by_id(message))
    target = literal(reference)
    if target and target.startswith("PractitionerRole/"):
        role = resolve(target)
        if role:
            found |= keys_of_resource(role)
    return found


def all_keys(references: Iterable[object], message: dict, resolve: Resolver) -> set[str]:
    found: set[str] = set()
    for reference in references:
        found |= keys(reference, message, resolve)
    return found
