"""Validation against the PDSm profiles, with issue locations where the client put the resource
(a bundle entry, or the posted DocumentReference)."""

from __future__ import annotations

from fhir_server.definitions import Definitions
from fhir_server.engine.errors import Issue
from fhir_server.terminology import Terminology
from fhir_server.validation import ProfileValidator


class ProfileCheck:
    def __init__(self, definitions: Definitions, validator: ProfileValidator | None = None) -> None:
        # The server's validator when the validation module left one (plans compiled once).
        self.validator = validator or ProfileValidator(definitions, Terminology(definitions))

    def prepare(self, urls: list[str]) -> dict[str, str]:
        """Compile the profiles at start-up; url -> why it cannot be used, for broken ones."""
        return self.validator.prepare(urls)

    def errors(self, resource: dict, profile: str, location: str | None = None) -> list[Issue]:
        """The errors of `resource` against `profile`; expressions moved under `location`
        (e.g. `Bundle.entry[2].resource`) when given."""
        issues = [i for i in self.validator.validate(resource, [profile]) if i.severity in ("error", "fatal")]
        if location is None:
            return issues
        return [relocate(issue, resource.get("resourceType", ""), location) for issue in issues]


def relocate(issue: Issue, resource_type: str, location: str) -> Issue:
    """`DocumentReference.content[0]` -> `<location>.content[0]`, in expressions and diagnostics."""
    def move(text: str) -> str:
        if text == resource_type or text.startswith(resource_type + "."):
            return location + text[len(resource_type):]
        return text

    expressions = tuple(move(e) for e in issue.expression) or (location,)
    diagnostics = issue.diagnostics
    if diagnostics.startswith(resource_type + ".") or diagnostics.startswith(resource_type + ":"):
        diagnostics = location + diagnostics[len(resource_type):]
    return Issue(issue.severity, issue.code, diagnostics, expressions)
