"""AuditEvents cannot be changed through the API."""

from __future__ import annotations

import pytest

from fhir_server.audit import IMMUTABLE_TYPES, refuse_change
from fhir_server.engine.errors import FhirError, operation_outcome


@pytest.mark.parametrize("interaction", ["update", "patch", "delete"])
def test_changes_to_audit_events_are_refused_with_405(interaction: str) -> None:
    with pytest.raises(FhirError) as caught:
        refuse_change("AuditEvent", interaction)
    assert caught.value.status == 405
    assert caught.value.headers == {"Allow": "GET"}
    [issue] = operation_outcome(caught.value.issues)["issue"]
    assert issue["severity"] == "error"
    assert issue["code"] == "not-supported"
    assert issue["diagnostics"].startswith(f"AuditEvent resources are immutable: {interaction} is not allowed")
    assert issue["expression"] == ["AuditEvent"]


@pytest.mark.parametrize("interaction", ["create", "read", "vread", "search-type", "history-instance"])
def test_other_interactions_on_audit_events_pass(interaction: str) -> None:
    assert refuse_change("AuditEvent", interaction) is None


def test_other_types_are_not_concerned() -> None:
    assert IMMUTABLE_TYPES == {"AuditEvent"}
    assert refuse_change("DocumentReference", "delete") is None
