"""The author of a submission set: `List.source`, and the `ihe-authorOrg` extension on it.

PDSm lets `source` name a contained PractitionerRole, Device or Patient; an organisation that
authored the set goes in the `ihe-authorOrg` extension on `source` (the extension's context is
`List.source`, so our `authorOrg` SearchParameter reads it there).

- ITI-105: the server writes the submission set itself, with the entry's first author as source
  (a stored entry's author is a Practitioner, PractitionerRole, Device or Patient). A Practitioner
  (what Ségur software sends) may not be a source: it becomes a contained PractitionerRole whose
  `practitioner` is a contained copy of it (or the literal reference of an uncontained one). What
  the author references among the entry's contained resources (a role's practitioner) is copied too.
- ITI-65: an `authorOrg` naming a contained Organization also gets that organisation's identifier
  (Reference.identifier): search indexes read no contained resource, so that identifier is what
  `List?authorOrg:identifier=[system]|[value]` finds a conformant submission set by.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from fhir_server.mhd import canonical
from fhir_server.mhd.documents import as_list


@dataclass
class Source:
    """What a submission set needs to name its author: its `source` and the resources to contain."""

    reference: dict
    contained: list[dict] = field(default_factory=list)


def submission_source(document: dict) -> Source:
    """The submission set source for a document entry, from its first author."""
    author = next((a for a in as_list(document.get("author")) if isinstance(a, dict)), {})
    contained = {c.get("id"): c for c in as_list(document.get("contained")) if isinstance(c, dict)}
    literal = author.get("reference")
    target = contained.get(literal[1:]) if isinstance(literal, str) and literal.startswith("#") else None
    if target is None:
        return _uncontained_source(author)
    copies = [copy.deepcopy(r) for r in _with_referenced(target, contained)]
    kind = target.get("resourceType")
    if kind == "Practitioner":
        identifier = _first_identifier(target)
        role = _role_for({"reference": literal, **({"identifier": identifier} if identifier else {})},
                         taken=set(contained))
        return Source({"reference": f"#{role['id']}"}, [role, *copies])
    return Source({"reference": literal}, copies)


def with_author_org_identifier(submission: dict) -> dict:
    """The submission set whose `authorOrg` names its contained Organization by identifier too.
    Unchanged (the same object) when there is nothing to add."""
    source = submission.get("source")
    if not isinstance(source, dict):
        return submission
    contained = {c.get("id"): c for c in as_list(submission.get("contained")) if isinstance(c, dict)}
    extensions = as_list(source.get("extension"))
    completed = [_with_identifier(e, contained) for e in extensions]
    if all(new is old for new, old in zip(completed, extensions, strict=True)):
        return submission
    return {**submission, "source": {**source, "extension": completed}}


def _uncontained_source(author: dict) -> Source:
    """The source for an author that is not contained (a literal or logical reference)."""
    reference = copy.deepcopy(author)
    kind = reference.get("type") or _resource_type(reference.get("reference"))
    if kind == "Practitioner":
        role = _role_for(reference, taken=set())
        return Source({"reference": f"#{role['id']}"}, [role])
    return Source(reference)


def _role_for(practitioner: dict, taken: set[str]) -> dict:
    """A PractitionerRole standing for a practitioner (PDSm: a source is a role, not a person); the
    practitioner's identifier in the reference keeps them recognisable as the author (access rules)."""
    return {"resourceType": "PractitionerRole", "id": _free_id("role-auteur", taken), "practitioner": practitioner}


def _with_referenced(resource: dict, contained: dict[str, dict]) -> list[dict]:
    """The resource and the contained resources it references (a role's practitioner, organisation)."""
    found = [resource]
    for value in resource.values():
        literal = value.get("reference") if isinstance(value, dict) else None
        if isinstance(literal, str) and literal.startswith("#") and literal[1:] in contained:
            found.append(contained[literal[1:]])
    return found


def _with_identifier(extension: object, contained: dict[str, dict]) -> object:
    if not isinstance(extension, dict) or extension.get("url") != canonical.AUTHOR_ORG:
        return extension
    reference = extension.get("valueReference")
    literal = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(literal, str) or not literal.startswith("#") or "identifier" in reference:
        return extension
    identifier = _first_identifier(contained.get(literal[1:]) or {})
    if identifier is None:
        return extension
    return {**extension, "valueReference": {**reference, "identifier": copy.deepcopy(identifier)}}


def _first_identifier(resource: dict) -> dict | None:
    return next((i for i in as_list(resource.get("identifier")) if isinstance(i, dict) and i.get("value")), None)


def _resource_type(literal: object) -> str | None:
    """`Practitioner` for `Practitioner/1`, `https://x/fhir/Practitioner/1` or `.../_history/2`."""
    if not isinstance(literal, str):
        return None
    parts = literal.split("/_history/", 1)[0].split("/")
    return parts[-2] if len(parts) >= 2 else None


def _free_id(wanted: str, taken: set[str]) -> str:
    candidate, suffix = wanted, 1
    while candidate in taken:
        suffix += 1
        candidate = f"{wanted}-{suffix}"
    return candidate
