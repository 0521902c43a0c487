"""Validation of resources: structure (official R4 JSON schema) first; profiles and invariants
build on it."""

from fhir_server.validation.profile import ProfileValidator
from fhir_server.validation.snapshot import SnapshotError, ensure_snapshot, generate_snapshot
from fhir_server.validation.structure import StructureValidator

__all__ = ["ProfileValidator", "SnapshotError", "StructureValidator", "ensure_snapshot", "generate_snapshot"]
