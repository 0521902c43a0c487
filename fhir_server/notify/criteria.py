"""Subscription criteria (R4: a search URL relative to the base, `Type?param=value&...`): parsing,
and which patients they restrict the matches to (for the authorisation of who may subscribe)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

TYPE_PATTERN = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
# Result parameters shape a search answer; a subscription has no answer to shape.
RESULT_PARAMS = frozenset({
    "_sort", "_count", "_include", "_revinclude", "_summary", "_elements", "_total", "_contained",
    "_containedType", "_format", "_pretty", "_cursor", "_page",
})


class CriteriaError(ValueError):
    """The criteria are not a search this server can evaluate for a subscription."""


@dataclass(frozen=True)
class Criteria:
    resource_type: str
    params: tuple[tuple[str, str], ...]

    @property
    def text(self) -> str:
        return f"{self.resource_type}?{urlencode(self.params)}" if self.params else self.resource_type


def parse_criteria(text: str | None) -> Criteria:
    if not isinstance(text, str) or not text.strip():
        raise CriteriaError("Subscription.criteria is required: a search such as DocumentReference?patient=Patient/123")
    text = text.strip()
    if "://" in text.split("?", 1)[0] or text.startswith("/"):
        raise CriteriaError("Subscription.criteria must be relative to this server's base: Type?param=value")
    resource_type, _, query = text.partition("?")
    if not TYPE_PATTERN.match(resource_type):
        raise CriteriaError(f"Subscription.criteria must start with a resource type, not {resource_type!r}")
    params = tuple(parse_qsl(query, keep_blank_values=True))
    shaping = sorted({name for name, _ in params if name.split(":")[0] in RESULT_PARAMS})
    if shaping:
        raise CriteriaError(f"Subscription.criteria may not use result parameters ({', '.join(shaping)})")
    return Criteria(resource_type, params)


def restricted_patients(criteria: Criteria, patient_params: frozenset[str]) -> frozenset[str] | None:
    """The patients ("Patient/x") every match of the criteria must belong to, or None when the
    criteria do not restrict matches to patients.

    A parameter restricts when it is one of `patient_params` (the type's Patient compartment
    parameters, `patient`, or `_id` for Patient itself), without modifier other than `:Patient`,
    and all its comma-separated values are Patient references. Parameters are AND-ed, so several
    restrictions intersect."""
    restriction: frozenset[str] | None = None
    for name, value in criteria.params:
        code, _, modifier = name.partition(":")
        if code not in patient_params or "." in name or modifier not in ("", "Patient"):
            continue
        patients = _patient_references(value, bare_ids=code in ("patient", "_id") or modifier == "Patient")
        if patients is None:
            continue
        restriction = patients if restriction is None else restriction & patients
    return restriction


def _patient_references(value: str, bare_ids: bool) -> frozenset[str] | None:
    found = set()
    for item in value.split(","):
        item = item.strip()
        if "Patient/" in item:
            ident = item.rsplit("Patient/", 1)[1].split("/_history/")[0]
        elif bare_ids and item and "/" not in item:
            ident = item
        else:
            return None
        if not ident or "/" in ident:
            return None
        found.add(f"Patient/{ident}")
    return frozenset(found) if found else None
