"""SMART on FHIR v2 scopes (`patient/Observation.rs`, `user/*.cruds`, `system/DocumentReference.cr`),
with the v1 forms (`.read`, `.write`, `.*`) accepted as their v2 equivalents."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(\*|read|write|[cruds]+)(\?.*)?$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}

# interaction -> SMART v2 permission letter
PERMISSION = {
    "create": "c", "read": "r", "vread": "r", "history": "r", "update": "u", "patch": "u",
    "delete": "d", "search": "s", "operation": "r",
}


@dataclass(frozen=True)
class Scope:
    context: str          # patient | user | system
    resource_type: str    # or *
    permissions: frozenset[str]


@dataclass(frozen=True)
class Scopes:
    scopes: tuple[Scope, ...]

    @classmethod
    def parse(cls, text: str | None) -> Scopes:
        parsed = []
        for item in (text or "").split():
            match = _SCOPE.match(item)
            if match is None:
                continue            # openid, fhirUser, launch/... carry no resource permission
            context, resource_type, perms, _ = match.groups()
            parsed.append(Scope(context, resource_type, frozenset(_V1.get(perms, perms))))
        return cls(tuple(parsed))

    def allows(self, resource_type: str, interaction: str) -> bool:
        letter = PERMISSION.get(interaction, "r")
        return any(s.resource_type in ("*", resource_type) and letter in s.permissions for s in self.scopes)

    def allows_reading(self, resource_type: str) -> bool:
        """May resources of this type reach the client at all (read or search), e.g. through an
        `_include`, a system-wide search or history, `$everything`?"""
        return self.allows(resource_type, "read") or self.allows(resource_type, "search")

    def named_types(self) -> frozenset[str]:
        """The resource types the scopes name one by one (not through `*`)."""
        return frozenset(s.resource_type for s in self.scopes if s.resource_type != "*")

    def __str__(self) -> str:
        return " ".join(f"{s.context}/{s.resource_type}.{''.join(sorted(s.permissions, key='cruds'.index))}"
                        for s in self.scopes)
