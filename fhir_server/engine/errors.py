"""Failures of an interaction, carried up to the HTTP layer as an OperationOutcome.

Every error names an HTTP status, an `issue.code` from the R4 IssueType value set, a diagnostic
that tells the integrator what to fix, and, where it applies, the FHIRPath `expression` of the
element at fault.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    severity: str          # fatal | error | warning | information
    code: str              # IssueType: invalid, structure, required, value, not-found, conflict, ...
    diagnostics: str
    expression: tuple[str, ...] = ()

    def to_fhir(self) -> dict:
        issue: dict = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


@dataclass
class FhirError(Exception):
    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)


def operation_outcome(issues: Iterable[Issue]) -> dict:
    issues = list(issues)
    if not issues:
        issues = [Issue("information", "informational", "All OK")]
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def error(status: int, code: str, diagnostics: str, *expression: str, severity: str = "error") -> FhirError:
    return FhirError(status, [Issue(severity, code, diagnostics, tuple(e for e in expression if e))])


def bad_request(diagnostics: str, *expression: str) -> FhirError:
    return error(400, "invalid", diagnostics, *expression)


def not_found(diagnostics: str) -> FhirError:
    return error(404, "not-found", diagnostics)


def gone(diagnostics: str) -> FhirError:
    return error(410, "deleted", diagnostics)


def conflict(diagnostics: str, *expression: str) -> FhirError:
    return error(409, "conflict", diagnostics, *expression)


def transient(diagnostics: str, retry_after_seconds: int = 1) -> FhirError:
    """503 with Retry-After: nothing was done, and the same request may succeed shortly."""
    failure = error(503, "transient", diagnostics)
    failure.headers["Retry-After"] = str(retry_after_seconds)
    return failure


def precondition_failed(diagnostics: str) -> FhirError:
    return error(412, "conflict", diagnostics)


def unprocessable(diagnostics: str, *expression: str) -> FhirError:
    return error(422, "processing", diagnostics, *expression)


def not_allowed(diagnostics: str, *expression: str) -> FhirError:
    return error(405, "not-supported", diagnostics, *expression)
