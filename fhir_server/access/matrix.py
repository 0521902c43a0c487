"""The access matrix (profession x class of data), kept as data in `access_matrix.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MATRIX_FILE = Path(__file__).with_name("access_matrix.json")
CLASSIFIED_ELEMENTS = ("category", "type", "class")


@dataclass(frozen=True)
class AccessMatrix:
    classes_by_code: dict[str, frozenset[str]]        # "system|code" or "type:X" -> class names
    denied: dict[str, frozenset[str]]                  # profession code -> denied class names
    default_denied: frozenset[str]

    @classmethod
    def load(cls, path: Path = MATRIX_FILE) -> AccessMatrix:
        data = json.loads(path.read_text(encoding="utf-8"))
        by_code: dict[str, set[str]] = {}
        for name, group in data["classes"].items():
            for code in group["codes"]:
                by_code.setdefault(code, set()).add(name)
        return cls(
            {code: frozenset(names) for code, names in by_code.items()},
            {code: frozenset(p.get("deny", [])) for code, p in data["professions"].items()},
            frozenset(data["default"].get("deny", [])),
        )

    def classes_of(self, resource: dict) -> list[str]:
        """Class names of a resource: from its type, and the codings of its category/type/class."""
        found: set[str] = set(self.classes_by_code.get(f"type:{resource.get('resourceType')}", ()))
        for element in CLASSIFIED_ELEMENTS:
            for concept in _as_list(resource.get(element)):
                for coding in _as_list(concept.get("coding") if isinstance(concept, dict) else None):
                    if isinstance(coding, dict):
                        found |= self.classes_by_code.get(f"{coding.get('system')}|{coding.get('code')}", frozenset())
        return sorted(found)

    def denied_classes(self, profession: str | None) -> list[str]:
        return sorted(self.denied.get(profession or "", self.default_denied))


def _as_list(value: object) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
