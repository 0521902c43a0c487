"""AuditEvents are evidence: once written they are never changed nor deleted through the API
(retention and purges are an operator's job, on the database, and show in `audit verify`)."""

from __future__ import annotations

from fhir_server.engine.errors import FhirError, Issue

IMMUTABLE_TYPES = frozenset({"AuditEvent"})
CHANGES = frozenset({"update", "patch", "delete"})


def refuse_change(resource_type: str, interaction: str) -> None:
    """Raise a 405 FhirError for an update, patch or delete of an immutable resource type; do
    nothing otherwise (reads, searches and creates are allowed)."""
    if resource_type in IMMUTABLE_TYPES and interaction in CHANGES:
        raise FhirError(405, [Issue(
            "error", "not-supported",
            f"{resource_type} resources are immutable: {interaction} is not allowed. The audit trail is "
            f"append-only and tamper-evident; record a new {resource_type} instead.",
            (resource_type,))], headers={"Allow": "GET"})
