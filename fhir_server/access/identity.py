"""Keys that name a professional, an organisation or a patient the same way whichever form a
resource uses (a reference, an RPPS identifier, a national id "8" + RPPS, a FINESS), so that
authors, blocked and authorised actors can be compared with the actor of a request."""

from __future__ import annotations

from collections.abc import Iterable

RPPS_SYSTEMS = frozenset({"https://rpps.esante.gouv.fr", "urn:oid:1.2.250.1.71.4.2.1"})
FINESS_SYSTEMS = frozenset({"https://finess.esante.gouv.fr", "urn:oid:1.2.250.1.71.4.2.2",
                            "http://finess.sante.gouv.fr"})
INS_SYSTEMS = frozenset({"urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.9",
                         "urn:oid:1.2.250.1.213.1.4.10", "urn:oid:1.2.250.1.213.1.4.11"})


def rpps_key(value: str) -> str:
    """`ps:<RPPS>`; the national id of an RPPS holder is "8" followed by the 11-digit RPPS."""
    value = value.strip()
    if len(value) == 12 and value.startswith("8") and value.isdigit():
        value = value[1:]
    return f"ps:{value}"


def finess_key(value: str) -> str:
    value = value.strip()
    # national structure id: "1" + FINESS / "3" + SIRET ... keep the FINESS form
    if len(value) == 10 and value.startswith("1") and value.isdigit():
        value = value[1:]
    return f"org:{value}"


def identifier_key(identifier: dict) -> str | None:
    system, value = identifier.get("system"), identifier.get("value")
    if not isinstance(value, str) or not value:
        return None
    if system in RPPS_SYSTEMS:
        return rpps_key(value)
    if system in FINESS_SYSTEMS:
        return finess_key(value)
    return None


def keys_of_reference(reference: dict, contained: dict[str, dict], *, role_organization: bool = True) -> set[str]:
    """Every key a Reference names: the literal reference, its logical identifier, and the
    identifiers of a contained target."""
    keys: set[str] = set()
    literal = reference.get("reference")
    if isinstance(literal, str):
        if literal.startswith("#"):
            target = contained.get(literal[1:])
            if target:
                keys |= keys_of_resource(target, role_organization=role_organization)
        else:
            keys.add("/".join(literal.split("/")[-2:]))
    identifier = reference.get("identifier")
    if isinstance(identifier, dict):
        key = identifier_key(identifier)
        if key:
            keys.add(key)
    return keys


def keys_of_resource(resource: dict, *, role_organization: bool = True) -> set[str]:
    """The keys of a Practitioner, Organization or PractitionerRole. A role names its
    practitioner and, with `role_organization`, its organisation too: a document written in a
    role belongs to both, but a Consent about a professional in a role concerns that
    professional, not everyone of the organisation."""
    keys = {key for key in (identifier_key(i) for i in _identifiers(resource)) if key}
    if resource.get("resourceType") == "PractitionerRole":
        fields = ("practitioner", "organization") if role_organization else ("practitioner",)
        for field in fields:
            if isinstance(resource.get(field), dict):
                keys |= keys_of_reference(resource[field], {})
    return keys


def _identifiers(resource: dict) -> Iterable[dict]:
    value = resource.get("identifier")
    if isinstance(value, list):
        return [i for i in value if isinstance(i, dict)]
    return [value] if isinstance(value, dict) else []


def contained_by_id(resource: dict) -> dict[str, dict]:
    return {c["id"]: c for c in resource.get("contained", []) if isinstance(c, dict) and "id" in c}
