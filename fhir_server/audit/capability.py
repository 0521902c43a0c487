"""What the CapabilityStatement says about the audit trail, which the generated statement cannot
know: AuditEvents are append-only (`immutable.py` answers 405 to any change), and a search of them
names a date range, a patient or an entity (the TDE rule of `module.py`)."""

from __future__ import annotations

from collections.abc import Sequence

from fhir_server.audit.immutable import CHANGES, IMMUTABLE_TYPES
from fhir_server.engine.capabilities import SearchCombination, amend_resource_entries, with_search_combinations

# The TDE rule: a wide search bounds `date`; one about a patient or an entity (or by id) needs not.
AUDIT_SEARCH_COMBINATIONS = tuple(SearchCombination((name,)) for name in ("date", "patient", "entity", "_id"))
APPEND_ONLY_DOCUMENTATION = ("Append-only (tamper-evident evidence): created and read, never changed; update, "
                             "patch and delete answer 405 (a PUT to a new id is taken as a create).")


def amend_capability_statement(statement: dict) -> dict:
    """The generated statement, without the changes refused on immutable types and with the TDE
    search rule."""
    statement = amend_resource_entries(statement, IMMUTABLE_TYPES, _append_only)
    return with_search_combinations(statement, "AuditEvent", _audit_combinations)


def _append_only(entry: dict) -> dict:
    """An entry whose type is never changed: no update, patch or delete, conditional or not, so no
    version-aware update either (versions still exist: vread)."""
    amended = {**entry, "interaction": [i for i in entry.get("interaction", []) if i.get("code") not in CHANGES],
               "versioning": "versioned", "conditionalUpdate": False, "conditionalDelete": "not-supported",
               "documentation": " ".join(filter(None, [entry.get("documentation"), APPEND_ONLY_DOCUMENTATION]))}
    amended.pop("updateCreate", None)           # a property of the update interaction, not declared
    return amended


def _audit_combinations(declared: Sequence[str]) -> Sequence[SearchCombination]:
    return AUDIT_SEARCH_COMBINATIONS
